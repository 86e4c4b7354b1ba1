import json

import pytest

from nasctl.arch import Arch, Block
from nasctl.errors import NasctlError
from nasctl.space import SearchSpace
from tests.conftest import SHIPPED


def _archs():
    for path in SHIPPED:
        space = SearchSpace.load(path)
        yield space.baseline()
        for seed in range(5):
            yield space.sample(seed)


@pytest.mark.parametrize("arch", list(_archs()), ids=lambda a: a.id)
def test_string_and_json_round_trip(arch, tmp_path):
    assert Arch.from_string(arch.to_string()) == arch
    assert Arch.from_string(arch.to_string()).id == arch.id
    path = arch.save(tmp_path / "arch.json")
    loaded = Arch.load(path)
    assert loaded == arch and loaded.id == arch.id
    data = json.loads(path.read_text())
    assert data["id"] == arch.id and data["arch"] == arch.to_string()


def test_id_is_stable_and_content_addressed():
    a = Arch.from_string(
        "in_r32_c3 | act_relu6 | stem_k3_c16_s1 | ibn_k3_e1_c16_s1 | fused_k3_e4_c32_s2 | head_c64 | out_cls10"
    )
    # a fixed value: the id must not change between runs, machines or versions
    assert a.id == "d1801a4bddae"
    assert a.id == Arch.from_string(a.to_string()).id
    assert len(a.id) == 12
    b = Arch.from_string(a.to_string().replace("fused_k3_e4", "fused_k5_e4"))
    assert b.id != a.id


def test_string_form_is_readable():
    a = SearchSpace.load(SHIPPED[0]).baseline()
    s = a.to_string()
    assert " | " in s and "stem_k" in s and "_s2" in s
    assert all(t.startswith(("ibn_k", "fused_k")) for t in s.split(" | ")[3:-2])


def test_block_properties():
    b = Block(kind="ibn", kernel=3, expansion=6, in_channels=16, out_channels=16, stride=1)
    assert b.residual and b.mid_channels == 96
    assert not Block(kind="ibn", kernel=3, expansion=6, in_channels=16, out_channels=16, stride=2).residual
    assert not Block(kind="fused_ibn", kernel=3, expansion=6, in_channels=16, out_channels=32, stride=1).residual


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("in_r32_c3 | stem_k3_c16_s1 | conv_k3_c16 | head_c0 | out_cls10", "cannot read token"),
        ("in_r32_c3 | stem_k3_c16_s1 | ibn_k4_e1_c16_s1 | head_c0 | out_cls10", "odd"),
        ("in_r32_c3 | stem_k3_c16_s1 | ibn_k3_e1_c16_s3 | head_c0 | out_cls10", "stride"),
        ("in_r32_c3 | stem_k3_c16_s1 | head_c0 | out_cls10", "blocks"),
        ("in_r32_c3 | stem_k3_c16_s1 | ibn_k3_e1_c16_s1 | head_c0", "num_classes or embedding_dim"),
        ("ibn_k3_e1_c16_s1 | in_r32_c3", "before the stem"),
    ],
)
def test_bad_arch_strings(text, fragment):
    with pytest.raises(NasctlError, match=fragment):
        Arch.from_string(text)


def test_inconsistent_channels_rejected():
    with pytest.raises(NasctlError, match="in_channels"):
        Arch.from_dict(
            {
                "resolution": 32,
                "stem_channels": 16,
                "num_classes": 10,
                "blocks": [
                    {"kind": "ibn", "kernel": 3, "expansion": 1, "in_channels": 8, "out_channels": 16, "stride": 1}
                ],
            }
        )


def test_arch_file_errors(tmp_path):
    with pytest.raises(NasctlError, match="no such arch file"):
        Arch.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NasctlError, match="not valid JSON"):
        Arch.load(bad)
    bad.write_text(json.dumps({"schema": "nasctl.arch/99", "resolution": 32}))
    with pytest.raises(NasctlError, match="unsupported arch schema"):
        Arch.load(bad)
