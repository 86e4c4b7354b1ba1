"""``sim-npu``: a deterministic analytical model of a parallel accelerator.

**A simulator, not a measurement.** It stands in for special-purpose hardware we do not
have, so that the estimator, the curated spaces and the search can be exercised against a
chip whose costs differ from a CPU's in the ways the mission cares about:

* a P x P multiply-accumulate array: each cycle it takes P input channels x P output
  channels at one output pixel and one kernel tap. A dense conv costs
  ``out_hw^2 * k^2 * ceil(cin/P) * ceil(cout/P)`` cycles, so channel counts off multiples
  of P waste cycles;
* a depthwise conv has no reduction over input channels: only one column of the array is
  busy, ``out_hw^2 * k^2 * ceil(c/P)`` cycles for ``c*k^2*out_hw^2`` MACs, i.e. 1/P of the
  array's throughput. Grouped convs cost ``groups`` times their per-group dense cost;
* a P-lane vector unit for elementwise, activation and pooling work;
* DRAM bandwidth: a kernel takes ``max(compute, bytes / bandwidth)`` (roofline), plus a
  fixed per-kernel launch overhead. Fused activations and residual adds are free on the
  compute side (the add reads one more input).

Parameters are configurable (``SimNPU(parallelism=16, clock_ghz=1.0, bandwidth_gbs=25.6,
overhead_us=2.0)``); the defaults describe a small edge NPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from nasctl.latency.kernels import Kernel


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class SimNPU:
    parallelism: int = 16
    clock_ghz: float = 1.0
    bandwidth_gbs: float = 25.6
    overhead_us: float = 2.0

    @property
    def name(self) -> str:
        return f"sim-npu-p{self.parallelism}"

    def describe(self) -> dict:
        return {"device": "sim-npu", "simulated": True, **asdict(self)}

    def cycles(self, k: Kernel) -> int:
        p = self.parallelism
        n = k.batch
        taps = max(1, k.kernel) ** 2
        out_px = k.out_hw**2 if len(k.out_shape) >= 3 else 1
        if k.op == "conv":
            return n * out_px * taps * _ceil(k.cin, p) * _ceil(k.cout, p)
        if k.op == "dwconv":
            return n * out_px * taps * _ceil(k.cout, p)
        if k.op == "gconv":
            return n * k.groups * out_px * taps * _ceil(k.cin // k.groups, p) * _ceil(k.cout // k.groups, p)
        if k.op == "fc":
            return n * _ceil(k.cin, p) * _ceil(k.cout, p)
        if k.op in ("maxpool", "avgpool"):
            return _ceil(k.out_elements, p) * taps
        if k.op == "gap":
            return _ceil(k.in_elements, p)
        if k.op == "se":
            c = k.cin
            hidden = max(1, k.hidden)
            return _ceil(k.in_elements, p) * 2 + 2 * n * _ceil(c, p) * _ceil(hidden, p)
        if k.op in ("add", "mul", "act"):
            per = {"hswish": 3, "sigmoid": 4, "silu": 5, "hsigmoid": 2}.get(k.act, 1)
            return _ceil(k.out_elements * max(1, k.n_inputs - 1), p) * per
        if k.op == "reshape":
            return 0
        # data movement (concat, split, shuffle, transpose, pad) and unknown ops:
        # one pass through the vector unit, then memory-bound below
        return _ceil(k.out_elements, p)

    def latency_ms(self, k: Kernel) -> float:
        compute_s = self.cycles(k) / (self.clock_ghz * 1e9)
        moved = 0 if k.op == "reshape" else k.bytes
        memory_s = moved / (self.bandwidth_gbs * 1e9)
        return (max(compute_s, memory_s) + self.overhead_us * 1e-6) * 1e3

    def model_latency_ms(self, kernels: list[Kernel]) -> float:
        return math.fsum(self.latency_ms(k) for k in kernels)
