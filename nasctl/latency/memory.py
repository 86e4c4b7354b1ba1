"""Memory: parameters and peak activation memory (liveness over the kernel schedule).

A tensor is alive from the step of the kernel that produces it (the graph input from step
0) to the step of its last consumer; a kernel's internal tensors (e.g. conv -> BN -> act)
are never materialised. Peak activation bytes = the largest sum of live tensor sizes over
the steps, counting the running kernel's inputs and outputs. Weights are counted apart
(``params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nasctl.arch import Arch
from nasctl.latency.kernels import BYTES_PER_ELEMENT, Kernel, _Graph, load_onnx


@dataclass(frozen=True)
class Memory:
    params: int
    peak_activation_bytes: int

    @property
    def param_bytes(self) -> int:
        return BYTES_PER_ELEMENT * self.params


def peak_from_schedule(sizes: dict[str, int], produced_at: dict[str, int], last_use: dict[str, int], steps: int) -> int:
    live = np.zeros(max(steps, 1), dtype=np.int64)
    for t, size in sizes.items():
        start = produced_at.get(t, 0)
        end = max(last_use.get(t, start), start)
        live[start : end + 1] += size
    return int(live.max()) if len(live) else 0


def memory_from_arch(arch: Arch, kernels: list[Kernel]) -> Memory:
    """Peak activations of ``kernels_from_arch(arch)``: a chain in which a residual kernel
    also reads its block's input."""
    sizes, produced, last = {"input": arch.in_channels * arch.resolution**2 * kernels[0].batch}, {"input": 0}, {}
    prev = "input"
    block_input: dict[str, str] = {}
    for i, k in enumerate(kernels):
        last[prev] = i
        name = k.name
        if name.startswith("blocks."):
            block = name.rsplit(".", 1)[0]
            block_input.setdefault(block, prev)
            if k.residual:
                last[block_input[block]] = i
        out = f"t{i}"
        sizes[out] = k.out_elements
        produced[out] = i
        prev = out
    last[prev] = len(kernels) - 1
    peak = peak_from_schedule(sizes, produced, last, len(kernels))
    return Memory(sum(k.params for k in kernels), BYTES_PER_ELEMENT * peak)


def memory_from_onnx(path_or_model, kernels: list[Kernel]) -> Memory:
    """Peak activations over the kernel schedule of an ONNX graph."""
    return memory_from_graph(_Graph(load_onnx(path_or_model)), kernels)


def memory_from_graph(g: _Graph, kernels: list[Kernel]) -> Memory:
    owner: dict[str, int] = {}
    for i, k in enumerate(kernels):
        for t in k.tensors:
            owner[t] = i
    sizes: dict[str, int] = {}
    produced: dict[str, int] = {}
    last: dict[str, int] = {}
    graph_inputs = [n for n in g.shape if n not in g.producer and n not in g.const]
    for t in graph_inputs:
        if g.consumers.get(t):
            produced[t] = 0
    node_owner = {name: i for i, k in enumerate(kernels) for name in k.nodes}
    for node in g.nodes:
        i = node_owner.get(node.name)
        if i is None:
            continue
        for t in node.input:
            if not t or t in g.const:
                continue
            src = owner.get(t)
            if src == i:
                continue  # internal to the kernel: never materialised
            if t in produced or t in owner:
                produced.setdefault(t, src if src is not None else 0)
                last[t] = max(last.get(t, 0), i)
        for t in node.output:
            if t in g.graph_outputs:
                produced.setdefault(t, i)
                last[t] = len(kernels) - 1
    for t in produced:
        shape = g.shape.get(t)
        if shape is not None and g.is_float.get(t, True):
            sizes[t] = int(math.prod(shape)) if shape else 1
    # reshape-like kernels alias their input (no copy)
    for k in kernels:
        if k.op == "reshape":
            for t in k.tensors:
                sizes.pop(t, None)
    peak = peak_from_schedule(sizes, produced, last, len(kernels))
    return Memory(sum(k.params for k in kernels), BYTES_PER_ELEMENT * peak)
