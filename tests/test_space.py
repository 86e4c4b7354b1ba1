import numpy as np
import pytest

from nasctl.errors import NasctlError
from nasctl.space import SearchSpace, align_channels
from tests.conftest import DEFAULT_SPACE, SHIPPED, UNCURATED_SPACE


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_spaces_load(path):
    space = SearchSpace.load(path)
    assert space.size() > 1000
    arch = space.sample(0)
    assert arch.resolution in space.spec.input.resolution


def test_shipped_spaces_cover_what_the_issue_asks():
    names = {p.stem for p in SHIPPED}
    assert {"mobilenetv2_32", "mobilenetv2_32_uncurated", "mobilenetv2_224"} <= names
    assert SearchSpace.load(UNCURATED_SPACE).spec.align_channels is False


@pytest.mark.parametrize("path", [p for p in SHIPPED if SearchSpace.load(p).spec.align_channels], ids=lambda p: p.stem)
def test_curated_channels_are_multiples_of_p(path):
    space = SearchSpace.load(path)
    p = space.spec.parallelism
    rng = np.random.default_rng(1234)
    for _ in range(500):
        arch = space.sample(rng)
        assert all(c % p == 0 for c in arch.channels), arch.to_string()
        assert all(b.in_channels % p == 0 for b in arch.blocks)


def test_uncurated_twin_produces_unaligned_channels():
    space = SearchSpace.load(UNCURATED_SPACE)
    p = space.spec.parallelism
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(100)]
    unaligned = [a for a in archs if any(c % p for c in a.channels)]
    assert len(unaligned) > 50


def test_align_channels():
    assert align_channels(24, 16) == 32
    assert align_channels(8, 16) == 16  # never below P
    assert align_channels(48, 16) == 48
    assert align_channels(100, 8) == 104
    for v in range(1, 400):
        for p in (1, 4, 8, 16, 32):
            a = align_channels(v, p)
            assert a % p == 0 and a >= p and a >= 0.9 * v


def test_size_matches_enumeration(tiny_space_dict):
    space = SearchSpace.from_dict(tiny_space_dict)
    combos = list(space.enumerate_params())
    # 2 resolutions x 2 multipliers x stage1 (1) x stage2 (2 channels x (4 + 4**2))
    assert space.size() == len(combos) == 2 * 2 * 1 * 2 * (4 + 16)
    assert len({tuple(sorted(c.items())) for c in combos}) == len(combos)


def test_flat_encoding_has_every_parameter_in_every_sample():
    space = SearchSpace.load(DEFAULT_SPACE)
    names = set(space.parameters())
    rng = np.random.default_rng(0)
    for _ in range(50):
        params = space.sample_params(rng)
        assert set(params) == names
        assert space.resolve(params) == space.resolve(dict(params))
    # positions beyond the chosen depth are ignored
    params = space.sample_params(1)
    params["s2.depth"] = 1
    a = space.resolve(params)
    params["s2.b2.kind"] = "fused_ibn" if params["s2.b2.kind"] == "ibn" else "ibn"
    assert space.resolve(params) == a


def test_resolve_rejects_bad_params():
    space = SearchSpace.load(DEFAULT_SPACE)
    params = space.sample_params(0)
    with pytest.raises(NasctlError, match="not among"):
        space.resolve({**params, "s2.b1.kernel": 9})
    params.pop("resolution")
    with pytest.raises(NasctlError, match="missing"):
        space.resolve(params)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_baseline_is_all_ibn_and_in_the_space(path):
    space = SearchSpace.load(path)
    base = space.baseline()
    assert all(b.kind == "ibn" for b in base.blocks)
    params = space.baseline_params()
    assert set(params) == set(space.parameters())
    for name, value in params.items():
        assert value in space.parameters()[name]


def test_mobilenetv2_224_baseline_is_mobilenetv2():
    base = SearchSpace.load(DEFAULT_SPACE.parent / "mobilenetv2_224.yaml").baseline()
    assert base.resolution == 224 and len(base.blocks) == 17 and base.head_channels == 1280
    assert [b.stride for b in base.blocks].count(2) == 4
    assert all(b.kernel == 3 for b in base.blocks)


def test_choice_lists_may_be_scalars(tiny_space_dict):
    tiny_space_dict["depth_multiplier"] = 1.0
    tiny_space_dict["stages"][0]["depth"] = 1
    space = SearchSpace.from_dict(tiny_space_dict)
    assert space.spec.depth_multiplier == [1.0]


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["stages"][1].update(kind=["ibn", "sepconv"]), "stages[1].kind[1]: unknown block kind 'sepconv'"),
        (lambda d: d["stages"][0].update(channels=-8), "stages[0].channels[0]: must be > 0"),
        (lambda d: d.update(stages=[]), "stages: must not be empty"),
        (lambda d: d["stages"][1].update(kernel=[3, 4]), "kernel sizes must be odd"),
        (lambda d: d["stages"][1].update(stride=3), "stages[1].stride"),
        (lambda d: d.update(parallelism=0), "parallelism: must be > 0"),
        (lambda d: d.update(output={}), "output needs classes or embedding_dim"),
        (lambda d: d.update(depht_multiplier=[1.0]), "depht_multiplier: is not a known field"),
        (lambda d: d["stages"][1].update(depth=[1, 1]), "lists 1 twice"),
        (lambda d: d["stages"][1].update(baseline={"kernel": 7}), "baseline.kernel 7 is not among"),
        (lambda d: d.pop("stem"), "stem: is required"),
    ],
)
def test_schema_errors_name_the_field(tiny_space_dict, mutate, fragment):
    mutate(tiny_space_dict)
    with pytest.raises(NasctlError) as info:
        SearchSpace.from_dict(tiny_space_dict, source="tiny.yaml")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_errors_carry_line_numbers(tmp_path):
    text = DEFAULT_SPACE.read_text().replace("channels: 64,", "channels: -64,")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "-64" in ln)
    with pytest.raises(NasctlError, match=rf"s\.yaml:{line}: stages\[3\]\.channels\[0\]"):
        SearchSpace.load(path)
    path.write_text("name: x\nstages: [\n  {depth: [1]\n")
    with pytest.raises(NasctlError, match=r"s\.yaml:\d+: malformed YAML"):
        SearchSpace.load(path)
    with pytest.raises(NasctlError, match="no such search-space file"):
        SearchSpace.load(tmp_path / "missing.yaml")
    with pytest.raises(NasctlError, match="is not a file"):
        SearchSpace.load(tmp_path)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_encode_is_the_inverse_of_resolve(path):
    space = SearchSpace.load(path)
    rng = np.random.default_rng(7)
    for arch in [space.baseline(), *(space.sample(rng) for _ in range(200))]:
        params = space.encode(arch)
        assert set(params) == set(space.parameters())  # every position filled, as a sampler sees it
        assert space.resolve(params) == arch


def test_encode_refuses_an_arch_the_space_does_not_hold():
    space = SearchSpace.load(DEFAULT_SPACE)
    other = SearchSpace.load(SHIPPED[0] if SHIPPED[0] != DEFAULT_SPACE else SHIPPED[1])
    with pytest.raises(NasctlError, match="does not hold"):
        space.encode(other.baseline())
    base = space.baseline()
    wider = base.model_copy(update={"head_channels": base.head_channels + 1})
    with pytest.raises(NasctlError, match="does not hold"):
        space.encode(wider)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_to_yaml_round_trips(path, tmp_path):
    space = SearchSpace.load(path)
    again = SearchSpace.load(space.save(tmp_path / "again.yaml"))
    assert again == space and again.spec == space.spec
    assert again.parameters() == space.parameters() and again.baseline() == space.baseline()


def test_to_yaml_keeps_a_non_default_value(tiny_space_dict):
    tiny_space_dict["align_channels"] = False
    space = SearchSpace.from_dict(tiny_space_dict)
    assert SearchSpace.loads(space.to_yaml()).spec.align_channels is False


def test_full_params_fills_unused_positions_only():
    space = SearchSpace.load(DEFAULT_SPACE)
    params = next(p for p in (space.sample_params(i) for i in range(100)) if p["s3.depth"] < 3)
    used = {k: v for k, v in params.items() if not k.startswith("s3.b3.")}  # position 3 is past the depth
    full = space.full_params(used)
    assert set(full) == set(space.parameters()) and {k: full[k] for k in used} == used
    assert space.resolve(full) == space.resolve(params)


def test_a_shipped_space_loads_by_name():
    assert SearchSpace.load("mobilenetv2_32") == SearchSpace.load(DEFAULT_SPACE)
    with pytest.raises(NasctlError, match=r"no such search-space file or shipped space \(.*mobilenetv2_32"):
        SearchSpace.load("mobilenetv2_33")
