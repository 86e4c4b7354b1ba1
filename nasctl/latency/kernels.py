"""The kernel IR: a model as the list of kernels the runtime executes.

A *kernel* is a fused group of ONNX nodes, grouped the way onnxruntime fuses them on the
CPU: a conv absorbs its BatchNorm, its activation and a following residual Add; an SE
block (global pool -> 1x1 convs -> sigmoid / hard-sigmoid -> Mul) is one kernel; a
channel shuffle (Reshape -> Transpose -> Reshape) is one kernel. Summing per original
node instead would double-count BN, activations and adds the runtime folds away.

Two paths build the same list for nasctl's own models (a test holds them to it):

* ``kernels_from_arch(arch)`` -- directly from an ``Arch``, no torch or ONNX (fast: search);
* ``kernels_from_onnx(path_or_model)`` -- from any ONNX file, via ONNX shape inference.

Shapes drop the batch dimension (``batch`` is a field): ``in_shape``/``out_shape`` are
``(C, H, W)`` for feature maps and ``(C,)`` for vectors. Where a kernel's output does not
keep its input's leading dimension (a transpose or reshape that moves it, a split along
it), both shapes are whole and ``batch`` is 1. ``macs`` counts the whole kernel, batch
included.

Transformer graphs map onto the same kernels plus a few of their own: a MatMul / Gemm by a
constant weight is an ``fc`` whose ``batch`` is the number of rows (tokens times batch); a
MatMul of two activations (attention's Q.K^T and attn.V) is a ``matmul``; LayerNormalization
(also written out as ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Div) is a ``norm``;
Softmax is a ``softmax``; a GELU written out with Erf or Tanh is an ``act``. Arithmetic on
constants and shapes alone (attention's scale computed from a Shape) is folded away, as
onnxruntime folds it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.nn.layers import LayerSpec
from nasctl.nn.lower import lower

# Kernel types the estimator knows. Anything else is "unknown" (roofline fallback + warning).
# Append only: a type's position is its code in the estimator's op feature.
KERNEL_OPS = (
    "conv",
    "dwconv",
    "gconv",
    "fc",
    "maxpool",
    "avgpool",
    "gap",
    "se",
    "add",
    "mul",
    "concat",
    "split",
    "shuffle",
    "transpose",
    "reshape",
    "pad",
    "act",
    "matmul",
    "norm",
    "softmax",
    "reduce",
)
BYTES_PER_ELEMENT = 4  # float32


@dataclass(frozen=True)
class Kernel:
    """One kernel the runtime runs, described by what a latency model reads.

    ``batch`` multiplies ``in_shape`` / ``out_shape`` (which leave it out); ``macs`` and
    ``bytes`` count the whole kernel, batch included. A ``matmul`` of (..., M, K) by
    (..., K, N) is written as M rows of K channels in and M rows of N channels out:
    ``in_shape = (K, M, 1)``, ``out_shape = (N, M, 1)`` (so ``cin`` is K, ``cout`` N and
    ``hw`` M), ``batch`` the product of the broadcast leading dims and ``read_elements``
    the elements of its activation operands as stored (before broadcasting); a constant
    operand is its ``params``.
    """

    op: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: int = 0
    stride: int = 1
    groups: int = 1
    act: str = ""
    residual: bool = False
    n_inputs: int = 1
    hidden: int = 0  # SE squeeze width
    macs: int = 0
    params: int = 0
    batch: int = 1
    onnx_op: str = ""  # the ONNX op type, for unknown kernels
    read_elements: int = 0  # activation elements read, where not in_elements * n_inputs (matmul)
    name: str = field(default="", compare=False)
    nodes: tuple[str, ...] = field(default=(), compare=False)  # grouped ONNX node names
    tensors: tuple[str, ...] = field(default=(), compare=False)  # their output tensors

    @property
    def cin(self) -> int:
        return self.in_shape[0] if self.in_shape else 0

    @property
    def cout(self) -> int:
        return self.out_shape[0] if self.out_shape else 0

    @property
    def hw(self) -> int:
        """Input spatial size (H; the larger side for non-square maps)."""
        return max(self.in_shape[1:3]) if len(self.in_shape) >= 3 else 1

    @property
    def out_hw(self) -> int:
        return max(self.out_shape[1:3]) if len(self.out_shape) >= 3 else 1

    @property
    def in_elements(self) -> int:
        return int(math.prod(self.in_shape)) * self.batch if self.in_shape else 0

    @property
    def out_elements(self) -> int:
        return int(math.prod(self.out_shape)) * self.batch if self.out_shape else 0

    @property
    def bytes(self) -> int:
        """Bytes moved: inputs (all of them: ``read_elements``, or ``n_inputs`` times
        ``in_elements``), output, weights."""
        reads = self.read_elements or self.in_elements * self.n_inputs
        return BYTES_PER_ELEMENT * (reads + self.out_elements + self.params)

    def key(self) -> tuple:
        """Identity for comparison across the two paths (names excluded)."""
        return (
            self.op,
            self.in_shape,
            self.out_shape,
            self.kernel,
            self.stride,
            self.groups,
            self.act,
            self.residual,
            self.n_inputs,
            self.hidden,
            self.macs,
            self.params,
            self.read_elements,
        )


# ---------------------------------------------------------------------------------------
# From an Arch
# ---------------------------------------------------------------------------------------
def _conv_kernel(s: LayerSpec, batch: int = 1) -> Kernel:
    op = "conv" if s.groups == 1 else ("dwconv" if s.groups == s.cin == s.cout else "gconv")
    return Kernel(
        op,
        (s.cin, s.in_hw, s.in_hw),
        (s.cout, s.out_hw, s.out_hw),
        s.kernel,
        s.stride,
        s.groups,
        s.act or "",
        s.residual,
        macs=s.macs * batch,
        params=s.folded_params,
        batch=batch,
        name=s.name,
    )


def _se_kernel(s: LayerSpec, batch: int = 1) -> Kernel:
    """The SE as one kernel; its MACs include the gating multiply."""
    shape = (s.cin, s.in_hw, s.in_hw)
    macs = (s.macs + s.cin * s.in_hw * s.in_hw) * batch
    return Kernel("se", shape, shape, hidden=s.hidden, macs=macs, params=s.folded_params, batch=batch, name=s.name)


def _fc(s: LayerSpec, batch: int = 1) -> Kernel:
    return Kernel(
        "fc",
        (s.cin,),
        (s.cout,),
        act=s.act or "",
        macs=s.macs * batch,
        params=s.folded_params,
        batch=batch,
        name=s.name,
    )


def _gap(s: LayerSpec, batch: int = 1) -> Kernel:
    return Kernel("gap", (s.cin, s.in_hw, s.in_hw), (s.cout, 1, 1), batch=batch, name=s.name)


def _flatten(s: LayerSpec, batch: int = 1) -> Kernel:
    return Kernel("reshape", (s.cin, 1, 1), (s.cout,), batch=batch, name=s.name)


_FROM_LAYER = {"conv": _conv_kernel, "se": _se_kernel, "linear": _fc, "pool": _gap, "flatten": _flatten}


def kernels_from_arch(arch: Arch, head: str = "classifier", batch: int = 1) -> list[Kernel]:
    """The kernels onnxruntime runs for ``build_model(arch, head)`` exported to ONNX: one
    per layer of the lowering (a conv with its BN, activation and residual add; conv
    params include the bias that BN folding creates)."""
    return [_FROM_LAYER[s.op](s, batch) for s in lower(arch, head)]


# ---------------------------------------------------------------------------------------
# From ONNX
# ---------------------------------------------------------------------------------------
_ACTS = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "HardSigmoid": "hsigmoid",
    "HardSwish": "hswish",
    "Tanh": "tanh",
    "LeakyRelu": "lrelu",
    "Elu": "elu",
    "Softplus": "softplus",
    "Gelu": "gelu",
}
_ELTWISE = {
    "Add": "add",
    "Sum": "add",
    "Sub": "add",
    "Max": "add",
    "Min": "add",
    "Where": "add",
    "Mul": "mul",
    "Div": "mul",
}
# Elementwise math that no conv or fc absorbs: a kernel of its own ("act").
_UNARY = {
    "Exp": "exp",
    "Log": "log",
    "Sqrt": "sqrt",
    "Reciprocal": "reciprocal",
    "Neg": "neg",
    "Abs": "abs",
    "Erf": "erf",
    "Pow": "pow",
}
_NORMS = {
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "MeanVarianceNormalization",
    "LpNormalization",
}
_SOFTMAXES = {"Softmax", "LogSoftmax", "Hardmax"}
_REDUCES = {
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}
# The ops of a GELU written out elementwise (torch's export below opset 20).
_GELU_OPS = {"Div", "Mul", "Add", "Sub", "Erf", "Tanh", "Pow"}
_GELU_MAX_NODES = 12
_RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_ALIASES = {"Identity", "Dropout"}
_SE_CHAIN = {
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Reshape",
    "Flatten",
    "Unsqueeze",
    "Squeeze",
    "Mul",
}


# Weights are read by shape only. Initializers that shape inference or the kernel builder
# read as *values* (Reshape shapes, Slice bounds, Clip bounds, Pad widths, Resize scales)
# are integer tensors or a few floats: those are kept whole.
_VALUE_MAX_ELEMENTS = 64
# onnx.TensorProto.FLOAT, FLOAT16, DOUBLE, BFLOAT16 (literals: the Arch path imports this
# module and needs no onnx)
_FLOAT_TYPES = frozenset({1, 10, 11, 16})
# onnx.AttributeProto.GRAPH, GRAPHS: the attributes of If / Loop / Scan bodies
_GRAPH_ATTRS = frozenset({5, 10})


def _is_weight(t) -> bool:
    """A float initializer too large to be a shape, bound or scale: only its shape matters."""
    return t.data_type in _FLOAT_TYPES and math.prod(t.dims) > _VALUE_MAX_ELEMENTS


def _typed_input(t):
    """A graph input with the shape and dtype of initializer ``t`` (no data)."""
    import onnx

    vi = onnx.ValueInfoProto(name=t.name)
    tensor_type = vi.type.tensor_type
    tensor_type.elem_type = t.data_type
    tensor_type.shape.SetInParent()  # a known rank, even for a scalar
    for d in t.dims:
        tensor_type.shape.dim.add().dim_value = d
    return vi


def _shapes_only_model(model):
    """A copy of ``model`` for shape inference in which every weight is a typed graph input
    (shape and dtype, no data). Shape inference serialises the model into C++ and parses
    the result back: with the weights that is most of its time, and they never change a
    shape. Returns (model copy, number of the original graph inputs)."""
    import onnx

    g = model.graph
    inputs = {i.name for i in g.input}
    kept, typed = [], []
    for t in g.initializer:
        if not _is_weight(t):
            kept.append(t)
        elif t.name not in inputs:  # IR < 4 files list initializers as inputs already
            typed.append(_typed_input(t))
    graph = onnx.GraphProto(
        name=g.name,
        node=g.node,
        input=[*g.input, *typed],
        output=g.output,
        value_info=g.value_info,
        initializer=kept,
        sparse_initializer=g.sparse_initializer,
    )
    copy = onnx.ModelProto(
        ir_version=model.ir_version,
        opset_import=model.opset_import,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        functions=model.functions,
        graph=graph,
    )
    return copy, len(g.input)


class _Consts:
    """Constant tensors by name (initializers, Constant nodes): shapes at once, numpy
    arrays only for the few read as values (a weight is never converted)."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._protos: dict[str, object] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def add_proto(self, name: str, tensor) -> None:
        self.shapes[name] = tuple(tensor.dims)
        self._protos[name] = tensor
        self._arrays.pop(name, None)

    def add_array(self, name: str, array: np.ndarray) -> None:
        self.shapes[name] = tuple(array.shape)
        self._arrays[name] = array
        self._protos.pop(name, None)

    def alias(self, name: str, source: str) -> None:
        """``name`` holds the constant ``source`` (an Identity of it)."""
        self.shapes[name] = self.shapes[source]
        if source in self._protos:
            self._protos[name] = self._protos[source]
        if source in self._arrays:
            self._arrays[name] = self._arrays[source]

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def __getitem__(self, name: str) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None:
            from onnx import numpy_helper

            array = self._arrays[name] = numpy_helper.to_array(self._protos[name])
        return array

    def get(self, name: str, default=None):
        return self[name] if name in self.shapes else default


class _Graph:
    """Index over an ONNX graph: shapes, constants, producers, consumers.

    Shape inference runs on a copy without the weights (``_shapes_only_model``);
    ``full_inference=True`` runs it on the whole model instead: slower, the same result
    (the reference a test holds the fast path to)."""

    def __init__(self, model, full_inference: bool = False):
        from onnx import shape_inference

        shapes_model, n_inputs = (model, len(model.graph.input)) if full_inference else _shapes_only_model(model)
        try:
            inferred = shape_inference.infer_shapes(shapes_model, strict_mode=False, data_prop=True)
        except Exception as exc:  # onnx raises many types
            raise NasctlError(f"ONNX shape inference failed: {str(exc).splitlines()[0]}") from None
        g = inferred.graph
        self.nodes = list(g.node)
        self.const = _Consts()
        for t in model.graph.initializer:
            self.const.add_proto(t.name, t)
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute:
                a = n.attribute[0]
                if a.name == "value":
                    self.const.add_proto(n.output[0], a.t)
                elif a.name in ("value_float", "value_int"):
                    self.const.add_array(n.output[0], np.array(a.f if a.name == "value_float" else a.i))
            elif n.op_type == "Identity" and n.input and n.input[0] in self.const and n.output:
                self.const.alias(n.output[0], n.input[0])  # torch shares equal weights this way
        self.shape: dict[str, tuple[int, ...]] = {}
        self.is_float: dict[str, bool] = {}
        unknown: list[str] = []
        # the weights made inputs for shape inference are not graph inputs
        graph_inputs = list(g.input)[:n_inputs]
        # A symbolic dim is 1 (the batch of 1 estimates are for, and that the probe below
        # feeds) where it is one of the inputs' symbols, or an unnamed dim 0. Another symbol
        # is a size shape inference could not work out (the tokens times the batch that a
        # Reshape made): the probe finds it.
        input_symbols = {d.dim_param for vi in graph_inputs for d in vi.type.tensor_type.shape.dim if d.dim_param}
        for vi in [*graph_inputs, *g.value_info, *g.output]:
            t = vi.type.tensor_type
            shape, complete = [], t.HasField("shape")  # no shape: not even the rank is known
            for j, d in enumerate(t.shape.dim):
                if d.HasField("dim_value"):
                    shape.append(d.dim_value)
                else:
                    shape.append(1)
                    complete = complete and (d.dim_param in input_symbols if d.dim_param else j == 0)
            self.shape[vi.name] = tuple(shape)
            self.is_float[vi.name] = is_float = t.elem_type in _FLOAT_TYPES
            if is_float and not complete:
                unknown.append(vi.name)
        self.producer: dict[str, object] = {}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        produced = {o for o in self.producer if o}
        unknown += [o for o in produced if o not in self.shape]
        if unknown:  # shapes computed at run time (e.g. Slice bounds from Shape ops): ask onnxruntime
            probe = [u for u in unknown if u in produced]
            for name, (shape, is_float) in _probe_shapes(model, g, probe).items():
                self.shape[name] = shape  # the probe ran at batch 1 already
                self.is_float[name] = is_float
        self.shape.update(self.const.shapes)
        self.graph_outputs = {o.name for o in g.output}
        self.inputs = [vi.name for vi in list(g.input)[:n_inputs] if vi.name not in self.const]
        self.static, self.folded = self._static_tensors()
        self._attrs: dict[int, dict[str, object]] = {}

    def _static_tensors(self) -> tuple[set[str], set[int]]:
        """Tensors computed from constants and shapes alone, which onnxruntime folds into
        constants (attention's scale from a Shape, a weight's Transpose), and the ids of
        the nodes computing them (and of the Shape / Size nodes, which read no values)."""
        values = set(self.inputs)
        static: set[str] = set()
        folded: set[int] = set()
        for n in self.nodes:
            outs = [o for o in n.output if o]
            if n.op_type in ("Shape", "Size"):
                folded.add(id(n))
                static.update(outs)
            elif any(a.type in _GRAPH_ATTRS for a in n.attribute) or any(i in values for i in n.input if i):
                values.update(outs)  # (If / Loop / Scan bodies may read any activation: never folded)
            elif n.op_type != "Constant":
                folded.add(id(n))
                static.update(outs)
        return static, folded

    def is_static(self, tensor: str) -> bool:
        """A constant, or computed from constants and shapes alone."""
        return tensor in self.const or tensor in self.static

    def attr(self, node, name: str, default=None):
        attrs = self._attrs.get(id(node))
        if attrs is None:  # index a node's attributes once: the builder asks several times
            attrs = self._attrs[id(node)] = {}
            for a in node.attribute:
                attrs.setdefault(a.name, a)
        a = attrs.get(name)
        if a is None:
            return default
        from onnx import helper

        return helper.get_attribute_value(a)

    def only_consumer(self, tensor: str):
        cons = self.consumers.get(tensor, [])
        if len(cons) == 1 and tensor not in self.graph_outputs:
            return cons[0]
        return None

    def dynamic_inputs(self, node) -> list[str]:
        return [i for i in node.input if i and not self.is_static(i)]


def _probe_shapes(model, inferred, names: list[str]) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Run the model once in onnxruntime (no graph optimisation, so names survive) with
    ``names`` exposed as outputs, and return their real shapes. Inputs: zeros, batch 1.
    ``inferred``: the graph shape inference returned, whose value infos and outputs the
    probe carries."""
    import onnx
    import onnxruntime as ort

    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    probe.graph.value_info.extend(inferred.value_info)
    del probe.graph.output[:]
    probe.graph.output.extend(inferred.output)
    existing = {o.name for o in probe.graph.output}
    for n in names:
        if n not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        inits = {i.name for i in model.graph.initializer}
        feeds = {}
        for inp in sess.get_inputs():
            if inp.name in inits:
                continue
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            feeds[inp.name] = np.zeros(shape, dtype=np.float32 if "float" in inp.type else np.int64)
        outs = sess.run(names, feeds)
    except Exception:  # a best effort: the statically inferred shapes stay
        return {}
    return {
        n: (tuple(int(d) for d in o.shape), bool(np.issubdtype(np.asarray(o).dtype, np.floating)))
        for n, o in zip(names, outs, strict=True)
    }


def _strip_batch(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[1:]) if shape else ()


def _io(in_full: tuple[int, ...], out_full: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(in_shape, out_shape, batch) of a kernel whose output need not keep its input's
    leading dim (a transpose or reshape moving it, a split or gather along it): the batch
    is split off where both shapes start with it; otherwise both stay whole, batch 1, so
    that ``in_elements`` and ``out_elements`` stay right."""
    if in_full and out_full and in_full[0] == out_full[0]:
        return tuple(in_full[1:]), tuple(out_full[1:]), int(in_full[0])
    return tuple(in_full), tuple(out_full), 1


def _elements(shape: tuple[int, ...] | None) -> int:
    return int(math.prod(shape)) if shape is not None else 0


def _clip_act(g: _Graph, node) -> str:
    lo = g.const.get(node.input[1]) if len(node.input) > 1 and node.input[1] else g.attr(node, "min")
    hi = g.const.get(node.input[2]) if len(node.input) > 2 and node.input[2] else g.attr(node, "max")
    lo = None if lo is None else float(np.asarray(lo))
    hi = None if hi is None else float(np.asarray(hi))
    if lo == 0.0 and hi == 6.0:
        return "relu6"
    if lo == 0.0 and hi is None:
        return "relu"
    return "clip"


def _act_of(g: _Graph, node) -> str | None:
    if node.op_type == "Clip":
        return _clip_act(g, node)
    return _ACTS.get(node.op_type)


class _Builder:
    def __init__(self, g: _Graph):
        self.g = g
        self.used: set[int] = set()
        self.kernels: list[Kernel] = []
        self.position = {id(n): i for i, n in enumerate(g.nodes)}

    def take(self, *nodes) -> None:
        for n in nodes:
            self.used.add(id(n))

    def taken(self, node) -> bool:
        return id(node) in self.used

    # -- helpers -------------------------------------------------------------------
    def _silu_after(self, tensor: str):
        """x -> Sigmoid -> Mul(x, .) : returns (sigmoid, mul) or None."""
        cons = self.g.consumers.get(tensor, [])
        if len(cons) != 2 or tensor in self.g.graph_outputs:
            return None
        sig = next((c for c in cons if c.op_type == "Sigmoid"), None)
        mul = next((c for c in cons if c.op_type == "Mul"), None)
        if sig is None or mul is None or set(mul.input) != {tensor, sig.output[0]}:
            return None
        return sig, mul

    def _gelu_after(self, tensor: str) -> list | None:
        """The nodes, in graph order, of a GELU written out elementwise on ``tensor``
        (torch's export: ``x * (erf(x / sqrt 2) + 1) * 0.5``, or the tanh approximation),
        or None. They are the first set of elementwise nodes, fed by ``tensor`` and
        constants alone, that holds all of ``tensor``'s consumers and has one output, then
        any scaling of that output by a constant (less a final residual Add of ``tensor``);
        an Erf or a Tanh among them makes it a GELU."""
        g = self.g
        cons = g.consumers.get(tensor, [])
        if len(cons) < 2 or tensor in g.graph_outputs or any(c.op_type not in _GELU_OPS for c in cons):
            return None
        start = min(self.position[id(c)] for c in cons)
        inside: list = []
        ids: set[int] = set()
        reach = {tensor}
        for node in g.nodes[start : start + 4 * _GELU_MAX_NODES]:
            if node.op_type not in _GELU_OPS or self.taken(node):
                continue
            ins = [i for i in node.input if i]
            if not any(i in reach for i in ins) or not all(i in reach or g.is_static(i) for i in ins):
                continue
            inside.append(node)
            ids.add(id(node))
            reach.update(o for o in node.output if o)
            if len(inside) > _GELU_MAX_NODES:
                return None
            if not all(id(c) in ids for c in cons):
                continue
            open_ = [
                o
                for n in inside
                for o in n.output
                if o and (o in g.graph_outputs or any(id(c) not in ids for c in g.consumers.get(o, [])))
            ]
            if len(open_) != 1:
                continue
            out = open_[0]
            exit_ = inside[-1]  # (the one node whose output leaves: none inside comes after it)
            if exit_.op_type in ("Add", "Sub") and tensor in exit_.input and len(inside) > 1:
                # a residual around the activation (x + gelu(x)): a GELU ends in a product, so
                # that Add is a kernel of its own
                inside.pop()
                return inside if any(n.op_type in ("Erf", "Tanh") for n in inside) else None
            while (nxt := g.only_consumer(out)) is not None and nxt.op_type in ("Mul", "Div"):
                other = [i for i in nxt.input if i and i != out]
                # a constant factor on either side, or a constant divisor
                if len(other) != 1 or not g.is_static(other[0]) or (nxt.op_type == "Div" and nxt.input[0] != out):
                    break
                inside.append(nxt)
                out = nxt.output[0]
            return inside if any(n.op_type in ("Erf", "Tanh") for n in inside) else None
        return None

    def _absorb_act(self, tensor: str, nodes: list) -> tuple[str, str]:
        """Absorb an activation consuming ``tensor``; returns (act, new tensor)."""
        if silu := self._silu_after(tensor):
            nodes.extend(silu)
            return "silu", silu[1].output[0]
        if gelu := self._gelu_after(tensor):
            nodes.extend(gelu)
            return "gelu", gelu[-1].output[0]
        nxt = self.g.only_consumer(tensor)
        if nxt is not None and (act := _act_of(self.g, nxt)) is not None:
            nodes.append(nxt)
            return act, nxt.output[0]
        return "", tensor

    def _absorb_residual(self, tensor: str, nodes: list) -> tuple[bool, str]:
        nxt = self.g.only_consumer(tensor)
        if nxt is not None and nxt.op_type in ("Add", "Sum") and len(self.g.dynamic_inputs(nxt)) == 2:
            other = next((i for i in nxt.input if i != tensor), tensor)
            if self.g.shape.get(other) == self.g.shape.get(tensor):
                nodes.append(nxt)
                return True, nxt.output[0]
        return False, tensor

    def emit(self, kernel: Kernel, nodes: list) -> None:
        self.take(*nodes)
        names = tuple(n.name for n in nodes)
        tensors = tuple(o for n in nodes for o in n.output)
        self.kernels.append(
            replace(kernel, name=kernel.name or (names[0] if names else ""), nodes=names, tensors=tensors)
        )

    # -- node kinds ----------------------------------------------------------------
    def conv(self, node) -> None:
        g = self.g
        x, w = node.input[0], node.input[1]
        wshape = g.shape.get(w)
        if wshape is None or len(wshape) != 4 or len(g.shape.get(x, ())) != 4:
            return self.unknown(node)
        cout, cin_g, kh, kw = wshape
        groups = int(g.attr(node, "group", 1))
        strides = g.attr(node, "strides", [1, 1])
        nodes = [node]
        t = node.output[0]
        nxt = g.only_consumer(t)
        if nxt is not None and nxt.op_type == "BatchNormalization":
            nodes.append(nxt)
            t = nxt.output[0]
        act, t = self._absorb_act(t, nodes)
        residual, t = self._absorb_residual(t, nodes)
        if residual and not act:
            act, t = self._absorb_act(t, nodes)
        in_shape = _strip_batch(g.shape[x])
        out_shape = _strip_batch(g.shape.get(t, g.shape.get(node.output[0], ())))
        cin = in_shape[0]
        op = "conv" if groups == 1 else ("dwconv" if groups == cin == cout else "gconv")
        weights = int(math.prod(wshape))
        batch = g.shape[x][0]
        macs = weights * int(math.prod(out_shape[1:])) * batch
        self.emit(
            Kernel(
                op,
                in_shape,
                out_shape,
                int(max(kh, kw)),
                int(max(strides)),
                groups,
                act,
                residual,
                macs=macs,
                params=weights + cout,
                batch=batch,
            ),
            nodes,
        )

    def fc(self, node) -> None:
        """MatMul / Gemm of an activation by a constant 2-D weight, with its bias Add and
        activation: ``batch`` rows (the product of the input's leading dims: tokens times
        batch) of ``cin`` -> ``cout``."""
        g = self.g
        x, w = node.input[0], node.input[1]
        wshape, xs = g.shape.get(w), g.shape.get(x)
        if wshape is None or len(wshape) != 2 or not xs:
            return self.unknown(node)
        gemm = node.op_type == "Gemm"
        trans_b = gemm and g.attr(node, "transB", 0)
        cin, cout = (wshape[1], wshape[0]) if trans_b else (wshape[0], wshape[1])
        nodes = [node]
        params = cin * cout
        t = node.output[0]
        if gemm and len(node.input) > 2 and node.input[2]:
            params += cout
        else:
            nxt = g.only_consumer(t)
            if nxt is not None and nxt.op_type == "Add" and any(g.is_static(i) for i in nxt.input):
                nodes.append(nxt)
                params += cout
                t = nxt.output[0]
        act, t = self._absorb_act(t, nodes)
        if gemm and g.attr(node, "transA", 0):
            rows = xs[-1]  # Gemm's A is 2-D: (K, M) transposed
        else:
            rows = int(math.prod(xs[:-1])) if len(xs) > 1 else 1
        self.emit(Kernel("fc", (cin,), (cout,), act=act, macs=rows * cin * cout, params=params, batch=rows), nodes)

    def matmul(self, node) -> None:
        """MatMul / Gemm of (..., M, K) by (..., K, N), at least one an activation and not
        an ``fc``: attention's Q.K^T and attn.V, batched weights. MACs:
        ``prod(...) * M * K * N`` with the leading dims broadcast."""
        g = self.g
        if len(node.input) < 2 or not node.input[0] or not node.input[1]:
            return self.unknown(node)
        a, b = node.input[0], node.input[1]
        sa, sb = tuple(g.shape.get(a, ())), tuple(g.shape.get(b, ()))
        if not sa or not sb:
            return self.unknown(node)
        if node.op_type == "Gemm":
            if len(sa) != 2 or len(sb) != 2:
                return self.unknown(node)
            sa = sa[::-1] if g.attr(node, "transA", 0) else sa
            sb = sb[::-1] if g.attr(node, "transB", 0) else sb
        sa = (1, *sa) if len(sa) == 1 else sa  # ONNX MatMul: a vector is a 1-row (A) or 1-column (B) matrix
        sb = (*sb, 1) if len(sb) == 1 else sb
        (m, k), n = sa[-2:], sb[-1]
        try:
            lead = np.broadcast_shapes(sa[:-2], sb[:-2])
        except ValueError:
            return self.unknown(node)
        batch = int(math.prod(lead))
        if g.is_static(a) and not g.is_static(b):  # W @ X, written as (X^T W^T)^T: the activation first
            in_shape, out_shape = (k, n, 1), (m, n, 1)
        else:
            in_shape, out_shape = (k, m, 1), (n, m, 1)
        params, reads, n_inputs = 0, 0, 0
        for t in node.input[:3] if node.op_type == "Gemm" else node.input[:2]:
            if not t:
                continue
            size = int(math.prod(g.shape.get(t, ())))  # as stored, before any broadcast
            if g.is_static(t):
                params += size
            else:
                reads += size
                n_inputs += 1
        self.emit(
            Kernel(
                "matmul",
                in_shape,
                out_shape,
                n_inputs=n_inputs,
                macs=batch * m * k * n,
                params=params,
                batch=batch,
                read_elements=reads,
            ),
            [node],
        )

    def _decomposed_layernorm(self, mean_node) -> tuple[list, int] | None:
        """ReduceMean(x) -> Sub(x, mean) -> Pow(., 2) -> ReduceMean -> Add(eps) -> Sqrt ->
        Div(x - mean, .) [-> Mul(scale)] [-> Add(bias)] (LayerNormalization as torch
        exports it below opset 17): (nodes, weights) or None."""
        g = self.g
        x = mean_node.input[0] if mean_node.input else ""
        sub = g.only_consumer(mean_node.output[0])
        if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, mean_node.output[0]]:
            return None
        d = sub.output[0]
        cons = g.consumers.get(d, [])
        if len(cons) != 2 or d in g.graph_outputs:
            return None
        sq = next((c for c in cons if c.op_type in ("Pow", "Mul") and c.input[0] == d), None)
        div = next((c for c in cons if c.op_type == "Div" and c.input[0] == d), None)
        if sq is None or div is None or (sq.op_type == "Mul" and list(sq.input) != [d, d]):
            return None
        nodes, t = [mean_node, sub, sq], sq.output[0]
        for op in ("ReduceMean", "Add", "Sqrt"):
            nxt = g.only_consumer(t)
            if nxt is None or nxt.op_type != op:
                return None
            nodes.append(nxt)
            t = nxt.output[0]
        if div.input[1] != t:
            return None
        nodes.append(div)
        t, params = div.output[0], 0
        for op in ("Mul", "Add"):  # the affine scale and bias
            nxt = g.only_consumer(t)
            other = [i for i in nxt.input if i and i != t] if nxt is not None and nxt.op_type == op else []
            if len(other) != 1 or not g.is_static(other[0]):
                break
            nodes.append(nxt)
            params += _elements(g.shape.get(other[0], ()))
            t = nxt.output[0]
        return nodes, params

    def norm(self, node, written_out: tuple[list, int] | None = None) -> None:
        """A normalisation (LayerNormalization and the like): one kernel over the tensor,
        its scale and bias the weights. ``written_out``: the nodes and weights of a
        LayerNormalization written out elementwise, ``node`` its first ReduceMean."""
        g = self.g
        if written_out is not None:
            nodes, params = written_out
            shape = g.shape.get(nodes[-1].output[0], ())
        else:
            nodes = [node]
            params = sum(_elements(g.shape.get(i)) for i in node.input[1:] if i and g.is_static(i))
            shape = g.shape.get(node.output[0], ())
        self.emit(
            Kernel("norm", _strip_batch(shape), _strip_batch(shape), params=params, batch=(shape or (1,))[0]), nodes
        )

    def softmax(self, node) -> None:
        shape = self.g.shape.get(node.output[0], ())
        self.emit(Kernel("softmax", _strip_batch(shape), _strip_batch(shape), batch=(shape or (1,))[0]), [node])

    def reduce(self, node) -> None:
        """A reduction that is neither a global pool nor part of a LayerNormalization
        (a mean over tokens, a sum)."""
        g = self.g
        x = node.input[0] if node.input else ""
        in_shape, out_shape, batch = _io(g.shape.get(x, ()), g.shape.get(node.output[0], ()))
        self.emit(Kernel("reduce", in_shape, out_shape, batch=batch), [node])

    def se(self, gap) -> bool:
        """GAP -> (1x1 conv | fc) chain -> sigmoid-like -> Mul(x, .) as one kernel."""
        g = self.g
        x = gap.input[0]
        nodes, t, hidden, params, macs = [gap], gap.output[0], 0, 0, 0
        for _ in range(16):
            nxt = g.only_consumer(t)
            if nxt is None and (silu := self._silu_after(t)):  # SiLU inside the SE (EfficientNet)
                nodes.extend(silu)
                t = silu[1].output[0]
                continue
            if nxt is None or nxt.op_type not in _SE_CHAIN:
                return False
            if nxt.op_type == "Mul":
                if x in nxt.input and len(nodes) > 1:
                    nodes.append(nxt)
                    c, h, w = _strip_batch(g.shape[x])
                    self.emit(
                        Kernel(
                            "se",
                            (c, h, w),
                            (c, h, w),
                            hidden=hidden,
                            macs=(macs + c * h * w) * g.shape[x][0],
                            params=params,
                            batch=g.shape[x][0],
                        ),
                        nodes,
                    )
                    return True
                if not (silu := self._silu_after(t)) or silu[1] is not nxt:
                    return False
            if nxt.op_type in ("Conv", "Gemm", "MatMul"):
                ws = g.shape.get(nxt.input[1], ())
                if not ws:
                    return False
                out_c = (
                    ws[1]
                    if nxt.op_type == "MatMul" or (nxt.op_type == "Gemm" and not g.attr(nxt, "transB", 0))
                    else ws[0]
                )
                hidden = hidden or out_c
                size = int(math.prod(ws))
                params += size + (out_c if len(nxt.input) > 2 and nxt.input[2] else 0)
                macs += size
            nodes.append(nxt)
            t = nxt.output[0]
        return False

    def pool(self, node) -> None:
        g = self.g
        x = node.input[0]
        k = g.attr(node, "kernel_shape", [1, 1])
        s = g.attr(node, "strides", [1, 1])
        op = "maxpool" if node.op_type == "MaxPool" else "avgpool"
        self.emit(
            Kernel(
                op,
                _strip_batch(g.shape[x]),
                _strip_batch(g.shape[node.output[0]]),
                int(max(k)),
                int(max(s)),
                batch=g.shape[x][0],
            ),
            [node],
        )

    def gap(self, node) -> None:
        g = self.g
        if self.se(node):
            return
        x = node.input[0]
        out = _strip_batch(g.shape[node.output[0]])
        if node.op_type == "ReduceMean" and len(out) == 1:
            out = (out[0],)
        self.emit(Kernel("gap", _strip_batch(g.shape[x]), out, batch=g.shape[x][0]), [node])

    def reshape_like(self, node) -> None:
        g = self.g
        # channel shuffle: Reshape(5D) -> Transpose -> Reshape(4D)
        if node.op_type == "Reshape" and len(g.shape.get(node.output[0], ())) == 5:
            tr = g.only_consumer(node.output[0])
            if tr is not None and tr.op_type == "Transpose":
                back = g.only_consumer(tr.output[0])
                if back is not None and back.op_type in ("Reshape", "Flatten"):
                    x = node.input[0]
                    self.emit(
                        Kernel(
                            "shuffle",
                            _strip_batch(g.shape[x]),
                            _strip_batch(g.shape[back.output[0]]),
                            groups=int(g.shape[node.output[0]][1]),
                            batch=g.shape[x][0],
                        ),
                        [node, tr, back],
                    )
                    return
        x = node.input[0]
        op = "transpose" if node.op_type == "Transpose" else "reshape"
        in_shape, out_shape, batch = _io(g.shape.get(x, ()), g.shape.get(node.output[0], ()))
        self.emit(Kernel(op, in_shape, out_shape, batch=batch), [node])

    def eltwise(self, node) -> None:
        g = self.g
        if node.op_type == "Mul" and (silu := self._silu_after(node.input[0])) and silu[1] is node:
            return
        if self.gelu(node):
            return
        dyn = g.dynamic_inputs(node)
        x = max(dyn or list(node.input), key=lambda i: int(math.prod(g.shape.get(i, (1,)))))
        shape = g.shape.get(node.output[0], g.shape.get(x, ()))
        self.emit(
            Kernel(
                _ELTWISE[node.op_type],
                _strip_batch(shape),
                _strip_batch(shape),
                n_inputs=max(1, len(dyn)),
                batch=(shape or (1,))[0],
            ),
            [node],
        )

    def gelu(self, node) -> bool:
        """Emit the GELU written out elementwise that ``node`` starts, if it starts one."""
        for t in self.g.dynamic_inputs(node):
            if (nodes := self._gelu_after(t)) and nodes[0] is node:
                shape = self.g.shape.get(nodes[-1].output[0], ())
                self.emit(
                    Kernel("act", _strip_batch(shape), _strip_batch(shape), act="gelu", batch=(shape or (1,))[0]),
                    nodes,
                )
                return True
        return False

    def act(self, node, act: str) -> None:
        g = self.g
        if node.op_type in _GELU_OPS and self.gelu(node):
            return
        nodes = [node]
        if node.op_type == "Sigmoid":
            if silu := self._silu_after(node.input[0]):
                if silu[0] is node:
                    nodes, act = list(silu), "silu"
        shape = g.shape.get(node.output[0], ())
        self.emit(Kernel("act", _strip_batch(shape), _strip_batch(shape), act=act, batch=(shape or (1,))[0]), nodes)

    def concat(self, node) -> None:
        g = self.g
        ins = [i for i in node.input if i]
        in_shape, out_shape, batch = _io(g.shape.get(ins[0], ()) if ins else (), g.shape.get(node.output[0], ()))
        self.emit(Kernel("concat", in_shape, out_shape, n_inputs=max(1, len(ins)), batch=batch), [node])

    def split(self, node) -> None:
        g = self.g
        x = node.input[0]
        outs = [o for o in node.output if o]
        in_shape, out_shape, batch = _io(g.shape.get(x, ()), g.shape.get(outs[0], ()) if outs else ())
        self.emit(Kernel("split", in_shape, out_shape, n_inputs=max(1, len(outs)), batch=batch), [node])

    def pad(self, node) -> None:
        g = self.g
        in_shape, out_shape, batch = _io(g.shape.get(node.input[0], ()), g.shape.get(node.output[0], ()))
        self.emit(Kernel("pad", in_shape, out_shape, batch=batch), [node])

    def unknown(self, node) -> None:
        g = self.g
        x = next((i for i in node.input if i in g.shape), None)
        ins, out, batch = _io(g.shape.get(x, ()) if x else (), g.shape.get(node.output[0], ()) if node.output else ())
        params = sum(math.prod(g.const.shapes[i]) for i in node.input if i in g.const)
        self.emit(Kernel("unknown", ins, out, params=params, batch=batch, onnx_op=node.op_type), [node])

    # -- driver --------------------------------------------------------------------
    def run(self) -> list[Kernel]:
        g = self.g
        for node in g.nodes:
            if self.taken(node):
                continue
            op = node.op_type
            outs = [o for o in node.output if o]
            if (
                op == "Constant"
                or op in _ALIASES
                or id(node) in g.folded
                or (outs and not any(g.is_float.get(o, True) for o in outs))
            ):
                self.take(node)  # constants, aliases and shape arithmetic cost nothing measurable
            elif not node.input or not outs:
                self.unknown(node)
            elif op in ("Conv",):
                self.conv(node)
            elif op in ("Gemm", "MatMul"):
                a, w = node.input[0], node.input[1] if len(node.input) > 1 else ""
                if w and g.is_static(w) and len(g.shape.get(w, ())) == 2 and not g.is_static(a):
                    self.fc(node)
                else:
                    self.matmul(node)
            elif op in ("MaxPool", "AveragePool"):
                self.pool(node)
            elif op == "ReduceMean" and (written_out := self._decomposed_layernorm(node)) is not None:
                self.norm(node, written_out)
            elif op in ("GlobalAveragePool", "GlobalMaxPool") or (
                op == "ReduceMean" and len(g.shape.get(node.input[0], ())) == 4
            ):
                self.gap(node)
            elif op in _REDUCES:
                self.reduce(node)
            elif op in _NORMS:
                self.norm(node)
            elif op in _SOFTMAXES:
                self.softmax(node)
            elif op in _RESHAPES or op == "Transpose":
                self.reshape_like(node)
            elif op in _ELTWISE:
                self.eltwise(node)
            elif (act := _act_of(g, node)) is not None:
                self.act(node, act)
            elif op in _UNARY and len(g.dynamic_inputs(node)) == 1:
                self.act(node, _UNARY[op])
            elif op == "Concat":
                self.concat(node)
            elif op in ("Split", "Slice") or (op == "Gather" and not g.is_static(node.input[0])):
                self.split(node)  # (a Gather from an activation copies a slice of it)
            elif op == "Pad":
                self.pad(node)
            elif op == "BatchNormalization":
                shape = g.shape.get(node.output[0], ())
                self.emit(Kernel("mul", _strip_batch(shape), _strip_batch(shape), batch=(shape or (1,))[0]), [node])
            else:
                self.unknown(node)
        return self.kernels


def load_onnx(path_or_model):
    """An ONNX ModelProto from a path (bad files: NasctlError) or a ModelProto."""
    import onnx

    if not isinstance(path_or_model, str | Path):
        return path_or_model
    path = Path(path_or_model)
    if not path.is_file():
        raise NasctlError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise NasctlError(
            f"{path}: not a readable ONNX model ({str(exc).splitlines()[0] if str(exc) else 'parse error'})"
        ) from None
    if not model.graph.node:
        raise NasctlError(f"{path}: not a readable ONNX model (the graph has no nodes)")
    return model


def kernels_from_onnx(path_or_model) -> list[Kernel]:
    """Group the nodes of an ONNX model into the kernels the runtime executes."""
    return kernels_from_graph(_Graph(load_onnx(path_or_model)))


def onnx_graph(path_or_model) -> _Graph:
    """The indexed graph (shape inference done once), for kernels and memory together."""
    return _Graph(load_onnx(path_or_model))


def kernels_from_graph(g: _Graph) -> list[Kernel]:
    return _Builder(g).run()
