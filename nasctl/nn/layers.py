"""LayerSpec: one layer of a lowered network, and the functions that make them.

Torch-free. A LayerSpec states a layer's whole shape (channels, kernel, stride, groups,
activation, input and output size); its weights, params and MACs are computed here and
nowhere else. Ops:

* ``conv``: kxk conv with 'same' padding, no bias, then BatchNorm (``bn``) and ``act``;
* ``se``: squeeze-excite: global pool -> 1x1 conv to ``hidden`` -> ``act`` -> 1x1 conv
  back -> ``gate`` -> multiply (both convs with a bias);
* ``pool``: global average pool; ``flatten``: (C, 1, 1) -> (C,);
* ``linear``: fully connected with a bias, then ``act``.
"""

from __future__ import annotations

from typing import NamedTuple


def conv_out(hw: int, kernel: int, stride: int) -> int:
    """Output size of a conv with 'same' padding (kernel // 2)."""
    return (hw + 2 * (kernel // 2) - kernel) // stride + 1


class LayerSpec(NamedTuple):
    """One layer. ``residual`` marks the layer that ends a residual block (the block's
    input is added to its output); ``block`` is the index of the arch block it belongs to.
    (A named tuple: immutable, and cheap to make in a search loop that lowers many archs.)"""

    name: str
    op: str  # "conv" | "se" | "pool" | "flatten" | "linear"
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: str | None = None
    in_hw: int = 1
    out_hw: int = 1
    bn: bool = False
    residual: bool = False
    block: int | None = None
    hidden: int = 0  # se: the squeeze width
    gate: str | None = None  # se: "sigmoid" | "hsigmoid"

    @property
    def weights(self) -> int:
        """Multiply weights (no biases, no BatchNorm)."""
        if self.op == "conv":
            return self.cin // self.groups * self.cout * self.kernel * self.kernel
        if self.op == "linear":
            return self.cin * self.cout
        if self.op == "se":
            return 2 * self.cin * self.hidden
        return 0

    @property
    def biases(self) -> int:
        """Bias terms, counting a BatchNorm as the per-channel bias it folds into."""
        if self.op in ("conv", "linear"):
            return self.cout
        if self.op == "se":
            return self.hidden + self.cout
        return 0

    @property
    def params(self) -> int:
        """Trainable parameters: a BatchNorm has two per channel (scale and shift)."""
        return self.weights + (2 * self.cout if self.bn else self.biases)

    @property
    def folded_params(self) -> int:
        """Parameters once BatchNorm is folded into the conv (as an inference runtime holds them)."""
        return self.weights + self.biases

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convs and linear layers (an SE's gating multiply not included)."""
        if self.op == "conv":
            return self.weights * self.out_hw * self.out_hw
        return self.weights

    def replace(self, **changes) -> LayerSpec:
        """A copy with ``changes``."""
        return self._replace(**changes)


def conv(
    name: str,
    cin: int,
    cout: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: str | None = None,
    hw: int = 1,
) -> LayerSpec:
    """A conv -> BatchNorm -> ``act`` layer on an ``hw`` x ``hw`` input."""
    return LayerSpec(name, "conv", cin, cout, kernel, stride, groups, act, hw, conv_out(hw, kernel, stride), bn=True)


def squeeze_excite(
    name: str, channels: int, hidden: int, act: str = "relu", gate: str = "sigmoid", hw: int = 1
) -> LayerSpec:
    return LayerSpec(name, "se", channels, channels, act=act, in_hw=hw, out_hw=hw, hidden=hidden, gate=gate)


def global_pool(name: str, channels: int, hw: int) -> LayerSpec:
    return LayerSpec(name, "pool", channels, channels, in_hw=hw)


def flatten(name: str, channels: int) -> LayerSpec:
    return LayerSpec(name, "flatten", channels, channels)


def linear(name: str, cin: int, cout: int, act: str | None = None) -> LayerSpec:
    return LayerSpec(name, "linear", cin, cout, act=act)


def close_block(layers: list[LayerSpec], in_ch: int, out_ch: int, stride: int) -> list[LayerSpec]:
    """A block's layers with the last one marked residual when the block keeps its input's
    shape (stride 1, ``in_ch == out_ch``)."""
    residual = stride == 1 and in_ch == out_ch
    return [*layers[:-1], layers[-1].replace(residual=residual)]
