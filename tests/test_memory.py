"""Peak activation memory against values worked out by hand.

The rule (``nasctl.latency.memory``): a tensor is alive from the step of the kernel that
produces it (the graph input from step 0) to the step of its last consumer; at each step the
running kernel's inputs and outputs both count; a kernel's internal tensors (conv -> BN ->
activation, conv -> residual add) are never materialised. Peak = the largest sum of live
tensors over the steps, in float32 (4 bytes). Batch 1 throughout.
"""

import torch
from torch import nn

from nasctl.arch import Arch
from nasctl.latency.kernels import kernels_from_arch, kernels_from_onnx
from nasctl.latency.memory import memory_from_arch, memory_from_onnx
from nasctl.nn.export import export_module, export_onnx

F32 = 4  # bytes per element

# A chain: stem conv 3->4, then one IBN block 4->12->8 (expansion 3) that is NOT residual
# (4 != 8 channels), then pool + classifier. 8x8 input, stride 1 everywhere.
CHAIN = "in_r8_c3 | act_relu | stem_k3_c4_s1 | ibn_k3_e3_c8_s1 | head_c0 | out_cls10"
# tensor sizes (floats): input 3*8*8 = 192; stem 4*8*8 = 256; expand 12*8*8 = 768;
# depthwise 12*8*8 = 768; project 8*8*8 = 512; pool 8; flatten 8; fc 10.
# step 0 stem:      input 192 + stem 256                  =  448
# step 1 expand:    stem 256 + expand 768                 = 1024
# step 2 depthwise: expand 768 + depthwise 768            = 1536  <- peak
# step 3 project:   depthwise 768 + project 512           = 1280
# steps 4-6 (pool, flatten, fc): at most 512 + 8          =  520
CHAIN_PEAK = 1536 * F32

# A skip connection: stem conv 3->4, block 0 IBN 4->8->4 (expansion 2, stride 1: residual,
# its add reads the stem output), block 1 IBN 4->8->8 with stride 2 (not residual).
SKIP = "in_r8_c3 | act_relu | stem_k3_c4_s1 | ibn_k3_e2_c4_s1 | ibn_k3_e2_c8_s2 | head_c0 | out_cls10"
# sizes (floats): input 192; stem 4*8*8 = 256; b0 expand 8*8*8 = 512; b0 depthwise 512;
# b0 project(+add) 4*8*8 = 256; b1 expand 512; b1 depthwise (stride 2) 8*4*4 = 128; b1 project 128.
# The stem output lives to step 3 (the residual add in b0's project kernel reads it):
# step 0 stem:         input 192 + stem 256                            =  448
# step 1 b0 expand:    stem 256 + expand 512                           =  768
# step 2 b0 depthwise: stem 256 (held for the add) + expand 512 + dw 512 = 1280  <- peak
# step 3 b0 project:   stem 256 + dw 512 + project 256                 = 1024
# step 4 b1 expand:    256 + 512                                       =  768
# step 5 b1 depthwise: 512 + 128                                       =  640
# the rest is smaller. Without the skip, step 2 would be 512 + 512 = 1024 (peak 1024).
SKIP_PEAK = 1280 * F32


def test_peak_of_a_chain_arch_by_hand(tmp_path):
    arch = Arch.from_string(CHAIN)
    assert not any(b.residual for b in arch.blocks)
    assert memory_from_arch(arch, kernels_from_arch(arch)).peak_activation_bytes == CHAIN_PEAK
    path = export_onnx(arch, tmp_path / "chain.onnx")
    assert memory_from_onnx(path, kernels_from_onnx(path)).peak_activation_bytes == CHAIN_PEAK


def test_peak_of_an_arch_with_a_skip_connection_by_hand(tmp_path):
    arch = Arch.from_string(SKIP)
    assert [b.residual for b in arch.blocks] == [True, False]
    assert memory_from_arch(arch, kernels_from_arch(arch)).peak_activation_bytes == SKIP_PEAK
    path = export_onnx(arch, tmp_path / "skip.onnx")
    assert memory_from_onnx(path, kernels_from_onnx(path)).peak_activation_bytes == SKIP_PEAK


class _Convs(nn.Module):
    """y = ReLU(conv 3x3 3->4); h = ReLU(conv 1x1 4->hidden); g = ReLU(depthwise 3x3 hidden);
    out = conv 1x1 hidden->out (g), plus y with ``skip`` (then out must be 4).
    The chain is hidden 12, out 8; the skip network hidden 16, out 4."""

    def __init__(self, hidden: int, out: int, skip: bool):
        super().__init__()
        self.skip = skip
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.c = nn.Conv2d(hidden, out, 1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        z = self.c(torch.relu(self.dw(torch.relu(self.b(y)))))
        return z + y if self.skip else z


def test_peak_of_onnx_modules_by_hand(tmp_path):
    # chain, 8x8, one kernel per conv (+ its ReLU, not materialised apart):
    # step 0: x 3*64 = 192 + a 4*64 = 256          =  448
    # step 1: a 256 + b 12*64 = 768                = 1024
    # step 2: b 768 + dw 768                       = 1536  <- peak
    # step 3: dw 768 + c 8*64 = 512 (graph output) = 1280
    path = export_module(_Convs(12, 8, skip=False), (1, 3, 8, 8), tmp_path / "chain.onnx")
    ks = kernels_from_onnx(path)
    assert [k.op for k in ks] == ["conv", "conv", "dwconv", "conv"]
    assert memory_from_onnx(path, ks).peak_activation_bytes == 1536 * F32

    # skip, 8x8; the add is absorbed into the last conv's kernel, which also reads y:
    # step 0: x 192 + y 4*64 = 256                                  =  448
    # step 1: y 256 + h 16*64 = 1024                                = 1280
    # step 2: y 256 (held for the add) + h 1024 + g 1024            = 2304  <- peak
    # step 3: y 256 + g 1024 + out 256 (conv + add, not apart)      = 1536
    # (without the skip held, step 2 would be 2048)
    path = export_module(_Convs(16, 4, skip=True), (1, 3, 8, 8), tmp_path / "skip.onnx")
    ks = kernels_from_onnx(path)
    assert [(k.op, k.residual) for k in ks] == [("conv", False), ("conv", False), ("dwconv", False), ("conv", True)]
    assert memory_from_onnx(path, ks).peak_activation_bytes == 2304 * F32
