"""The standard-architecture zoo: published sizes, ONNX export, and full IR coverage."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from nasctl import zoo
from nasctl.latency import randnet
from nasctl.latency.kernels import kernels_from_onnx
from nasctl.nn.export import export_module

PUBLISHED_PARAMS_M = {
    "mobilenet_v2": 3.5,
    "mobilenet_v3_large": 5.4,
    "mobilenet_v3_small": 2.5,
    "mnasnet_a1": 3.9,
    "efficientnet_b0": 5.3,
    "shufflenet_v2": 2.3,
    "resnet18": 11.7,
    "resnet50": 25.6,
    "squeezenet": 1.24,
}
EXPECTED_OPS = {
    "mobilenet_v3_large": {"HardSwish", "HardSigmoid"},
    "shufflenet_v2": {"Transpose", "Concat"},
    "efficientnet_b0": {"Sigmoid", "Mul"},
    "resnet18": {"MaxPool"},
    "squeezenet": {"Concat"},
    "googlenet": {"Concat", "MaxPool"},
    "densenet121": {"Concat", "AveragePool", "BatchNormalization"},
}
EXPECTED_KERNELS = {
    "mobilenet_v3_large": {"se", "dwconv"},
    "shufflenet_v2": {"shuffle", "split", "concat"},
    "efficientnet_b0": {"se"},
    "resnet50": {"maxpool"},
    "squeezenet": {"concat", "maxpool"},
    "vgg_small": {"fc", "maxpool"},
    "regnetx_400mf": {"gconv"},
    "resnext50_32x4d": {"gconv", "maxpool"},
    "googlenet": {"concat", "maxpool"},
    "densenet121": {"concat", "avgpool", "mul"},  # the pre-activation BNs stand alone
}
# the later additions, held to 2% of the published count (RegNetX: the paper's / pycls's
# 5.2M with widths 32-64-160-384; torchvision rounds the last to 400: 5.5M), and the
# others exactly to torchvision's counts
NEW_MODELS_PARAMS_M = {"regnetx_400mf": 5.2, "resnext50_32x4d": 25.0, "googlenet": 6.6, "densenet121": 8.0}
TORCHVISION_PARAMS = {"resnext50_32x4d": 25_028_904, "googlenet": 6_624_904, "densenet121": 7_978_856}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_param_counts_match_the_papers(name):
    params = sum(p.numel() for p in zoo.build(name).parameters()) / 1e6
    assert abs(params / PUBLISHED_PARAMS_M[name] - 1) < 0.15, params


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_export_runs_in_onnxruntime_and_parses_fully(name, tmp_path):
    path = zoo.export(name, tmp_path / f"{name}.onnx", resolution=64, width=0.5)
    model = zoo.prepared(name, width=0.5)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert out.shape == (1, 1000)
    assert np.max(np.abs(out - ref)) < 1e-3
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert EXPECTED_OPS.get(name, set()) <= ops
    kernels = kernels_from_onnx(path)
    assert not [k for k in kernels if k.op == "unknown"], "every zoo operator has a kernel type"
    assert EXPECTED_KERNELS.get(name, set()) <= {k.op for k in kernels}


def test_unknown_name():
    with pytest.raises(ValueError, match="known:"):
        zoo.build("alexnet")


@pytest.fixture(scope="module")
def new_models():
    torch.manual_seed(0)
    return {name: zoo.build(name).eval() for name in NEW_MODELS_PARAMS_M}


@pytest.mark.parametrize("name", sorted(NEW_MODELS_PARAMS_M))
def test_new_models_param_counts_within_two_percent(name, new_models):
    params = sum(p.numel() for p in new_models[name].parameters())
    assert abs(params / 1e6 / NEW_MODELS_PARAMS_M[name] - 1) < 0.02, params
    if name in TORCHVISION_PARAMS:
        assert params == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(NEW_MODELS_PARAMS_M))
def test_new_models_run_at_low_resolution(name, new_models):
    with torch.no_grad():  # (the ONNX test runs them at width 0.5 and 64x64)
        assert new_models[name](torch.zeros(2, 3, 32, 32)).shape == (2, 1000)
        assert zoo.build(name, num_classes=10, width=0.75).eval()(torch.zeros(1, 3, 48, 48)).shape == (1, 10)


def _grouped(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]


def test_regnet_and_resnext_group_widths(new_models):
    regnet = _grouped(new_models["regnetx_400mf"])
    assert len(regnet) == 1 + 2 + 7 + 12
    assert {m.in_channels // m.groups for m in regnet} == {16}  # group width 16
    assert sorted({m.in_channels for m in regnet}) == [32, 64, 160, 384]  # bottleneck ratio 1
    resnext = _grouped(new_models["resnext50_32x4d"])
    assert len(resnext) == 3 + 4 + 6 + 3 and {m.groups for m in resnext} == {32}
    assert sorted({m.in_channels // m.groups for m in resnext}) == [4, 8, 16, 32]  # 32x4d, doubling
    for name in ("regnetx_400mf", "resnext50_32x4d"):  # the grouped 3x3 does the stride
        strided = [m for m in new_models[name].modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
        assert all(m.kernel_size == (1, 1) or m.groups > 1 for m in strided[1:])
    # scaled: widths stay multiples of the group width
    for width in (0.5, 0.75, 1.25):
        for m in _grouped(zoo.build("regnetx_400mf", width=width)):
            assert m.in_channels % m.groups == 0 and m.in_channels // m.groups in (8, 16)


def test_googlenet_inception_outputs_match_the_paper(new_models):
    blocks = [m for m in new_models["googlenet"].modules() if isinstance(m, zoo.Inception)]
    assert [b.out_ch for b in blocks] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert all(b.b3[1][0].kernel_size == (3, 3) for b in blocks)  # torchvision's 3x3, not the paper's 5x5


def test_densenet_growth_and_transitions(new_models):
    convs = [m for m in new_models["densenet121"].modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * (6 + 12 + 24 + 16) + 3  # stem, two per layer, transitions: 121 with the FC
    assert new_models["densenet121"].head.in_features == 1024


def test_families_cover_the_zoo_once():
    members = [m for models in zoo.FAMILIES.values() for m in models]
    assert sorted(members) == sorted(zoo.ZOO)  # every model, none twice
    assert all(zoo.family_of(name) in zoo.FAMILIES for name in zoo.ZOO)
    assert zoo.family_of("regnetx_400mf") == zoo.family_of("resnext50_32x4d")
    assert zoo.family_of("resnet50") != zoo.family_of("resnext50_32x4d")
    with pytest.raises(ValueError, match="known:"):
        zoo.family_of("alexnet")


def test_zoo_variant_is_seeded_and_names_its_family():
    name, net, shape, family = randnet.zoo_variant(np.random.default_rng(3))
    name2, net2, shape2, family2 = randnet.zoo_variant(np.random.default_rng(3))
    assert (name, shape, family, str(net)) == (name2, shape2, family2, str(net2))
    assert randnet.family_from_network_name(name) == family
    specs = [randnet.zoo_variant_spec(np.random.default_rng(seed)) for seed in range(6)]
    assert len({s[0] for s in specs}) >= 3  # families vary with the seed
    for fam, model, width, res in specs:
        label = f"zoo:{fam}:{model}:w{width:g}:r{res}"
        assert randnet.family_from_network_name(label) == fam == zoo.family_of(model)
        assert 0.5 <= width <= 1.5 and 96 <= res <= 224 and res % 16 == 0
    assert randnet.family_from_network_name("r17") is None
    assert randnet.family_from_network_name("resnet50") == "resnet"


def test_zoo_variant_cost_is_capped():
    assert randnet.fit_zoo_budget("mobilenet_v2", 1.0, 224) == (1.0, 224)  # light: untouched
    for name, width in (("resnext50_32x4d", 1.0), ("vgg_small", 1.5)):
        w, res = randnet.fit_zoo_budget(name, width, 224)
        assert randnet.zoo_macs(name, w, res) <= randnet.ZOO_MAX_MACS
        assert res < 224 and 96 <= res and 0.5 <= w <= width
    assert randnet.fit_zoo_budget("vgg_small", 1.5, 224)[0] < 1.5  # too heavy even at 96
    # the probe's area scaling gives the papers' counts at 224
    for name, gmacs in (("regnetx_400mf", 0.40), ("resnext50_32x4d", 4.2)):
        assert abs(randnet.zoo_macs(name, 1.0, 224) / 1e9 / gmacs - 1) < 0.03


def test_random_cnn_menu_has_grouped_bottlenecks_and_inception(tmp_path):
    assert {"xblock", "inception"} <= set(randnet.KINDS) and abs(sum(randnet.KIND_P) - 1) < 1e-9
    seen = set()
    for seed in range(30):
        net, _ = randnet.random_cnn(np.random.default_rng(seed))
        for m in net.modules():
            if isinstance(m, zoo.Inception):
                seen.add("inception")
            if isinstance(m, zoo.ResBlock) and any(isinstance(c, nn.Conv2d) and c.groups > 1 for c in m.modules()):
                seen.add("xblock")
    assert seen == {"xblock", "inception"}
    net = nn.Sequential(zoo.ResBlock(24, 48, 2, True, mid=48, groups=3), zoo.Inception(48, 16, 16, 24, 8, 16, 8, k5=5))
    path = export_module(net.eval(), (1, 24, 32, 32), tmp_path / "blocks.onnx")
    ops = [k.op for k in kernels_from_onnx(path)]
    assert "unknown" not in ops and {"gconv", "concat", "maxpool"} <= set(ops)
