"""The CLI end to end: typer's runner for speed, and one real subprocess run."""

import json
import subprocess
import sys

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from nasctl.arch import Arch
from nasctl.cli import app
from tests.conftest import DEFAULT_SPACE, SHIPPED

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("space", "export", "arch"):
        assert cmd in r.output
    r = run("space", "--help")
    assert r.exit_code == 0 and "--sample" in r.output and "--json" in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and r.output.startswith("nasctl ")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_space_json(path):
    r = run("space", path, "--json", "--sample", 4, "--stats-samples", 50)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["size"] > 1000 and len(data["samples"]) == 4
    for s in data["samples"]:
        assert Arch.from_string(s["arch"]).id == s["id"]
    assert data["stats"]["params"]["min"] <= data["baseline"]["params"] <= data["stats"]["params"]["max"] * 10


def test_space_table():
    r = run("space", DEFAULT_SPACE)
    assert r.exit_code == 0 and "choice combinations" in r.output and "baseline" in r.output


def test_space_writes_samples_and_baseline(tmp_path):
    r = run("space", DEFAULT_SPACE, "--sample", 3, "--seed", 4, "--out", tmp_path / "archs")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "archs").glob("*.json"))
    assert len(files) == 3
    archs = [Arch.load(f) for f in files]
    r = run("space", DEFAULT_SPACE, "--baseline", "--out", tmp_path / "baseline.json")
    assert r.exit_code == 0
    base = Arch.load(tmp_path / "baseline.json")
    assert all(b.kind == "ibn" for b in base.blocks)
    assert len({a.id for a in archs}) >= 2


def test_export_from_space_runs_in_onnxruntime(tmp_path):
    out = tmp_path / "m.onnx"
    r = run("export", "--space", DEFAULT_SPACE, "--seed", 0, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["max_abs_diff_vs_torch"] < 1e-4
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "input"


def test_export_from_arch_file_and_string(tmp_path):
    assert run("space", DEFAULT_SPACE, "--baseline", "--out", tmp_path / "b.json").exit_code == 0
    r = run("export", tmp_path / "b.json", "--out", tmp_path / "b.onnx", "--head", "features")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b.onnx").is_file()
    text = Arch.load(tmp_path / "b.json").to_string()
    r = run("export", text, "--out", tmp_path / "s.onnx", "--no-verify")
    assert r.exit_code == 0, r.output


def test_arch_command(tmp_path):
    r = run("arch", "--space", DEFAULT_SPACE, "--seed", 1, "--json")
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["params"] == sum(layer["params"] for layer in data["layers"])


def _bad_space(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing", "no such search-space file"),
        ("malformed", "malformed YAML"),
        ("unknown_kind", "unknown block kind 'sepconv'"),
        ("negative_channels", "must be > 0"),
        ("empty_stages", "stages: must not be empty"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, case, fragment):
    text = DEFAULT_SPACE.read_text()
    paths = {
        "missing": tmp_path / "nope.yaml",
        "malformed": _bad_space(tmp_path, "m.yaml", "name: x\nstages: [\n  {depth: [1]\n"),
        "unknown_kind": _bad_space(
            tmp_path,
            "k.yaml",
            text.replace("kind: [ibn, fused_ibn], kernel: [3, 5]", "kind: [ibn, sepconv], kernel: [3, 5]", 1),
        ),
        "negative_channels": _bad_space(tmp_path, "n.yaml", text.replace("channels: 64,", "channels: -64,")),
        "empty_stages": _bad_space(
            tmp_path, "e.yaml", text[: text.index("stages:")] + "stages: []\n" + text[text.index("head:") :]
        ),
    }
    for command in (["space", paths[case]], ["export", "--space", paths[case], "--out", tmp_path / "x.onnx"]):
        r = run(*command)
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.output
        assert "Traceback" not in r.output


def test_export_argument_errors(tmp_path):
    r = run("export", "--out", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "give either ARCH" in r.output
    r = run("export", tmp_path / "missing.json", "--out", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "no such arch file" in r.output


def test_console_script_end_to_end(tmp_path):
    """A real process: `python -m nasctl` as a user runs it (no traceback on bad input)."""
    out = tmp_path / "m.onnx"
    ok = subprocess.run(
        [sys.executable, "-m", "nasctl", "export", "--space", str(DEFAULT_SPACE), "--seed", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert out.exists() and "onnxruntime matches torch" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "nasctl", "space", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
