"""What the quick commands import: ``nasctl estimate x.onnx`` stays off torch and
scikit-learn (whole-command time, bench/latency_speed.py), and lightgbm imported through
nasctl.latency._lgb leaves scikit-learn importable and lightgbm's training working.
Each check runs in a fresh interpreter, since this pytest process has imported all of it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import ROOT


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter at the repository root; it prints one JSON line last."""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _small_onnx(path) -> None:
    """conv 3x3 + relu, global average pool, fc: built with onnx.helper, no torch."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(4, 8)).astype(np.float32), "fw"),
        numpy_helper.from_array(np.zeros(4, np.float32), "fb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


HEAVY = ("torch", "sklearn", "pandas", "matplotlib", "optuna")


def test_estimate_onnx_imports_neither_torch_nor_sklearn(tmp_path):
    model = tmp_path / "small.onnx"
    _small_onnx(model)
    code = f"""
import json, runpy, sys
sys.argv = ["nasctl", "estimate", {str(model)!r}, "--json"]
try:
    runpy.run_module("nasctl", run_name="__main__")
    code = 0
except SystemExit as exc:
    code = exc.code or 0
print()
print(json.dumps({{"code": code, "modules": sorted({{m.split(".")[0] for m in sys.modules}})}}))
"""
    out = _python(code)
    assert out["code"] == 0
    assert "lightgbm" in out["modules"]  # the estimator was loaded: the check means something
    assert [m for m in HEAVY if m in out["modules"]] == []


_TRAIN = """
X = np.random.default_rng(0).normal(size=(200, 3))
y = X[:, 0] * 2 + X[:, 1]
booster = lgb.train({"verbose": -1, "num_threads": 1, "min_data_in_leaf": 3}, lgb.Dataset(X, y), num_boost_round=20)
train_ok = bool(np.corrcoef(booster.predict(X), y)[0, 1] > 0.9)
again = lgb.Booster(model_str=booster.model_to_string()).predict(X[:5]).tolist() == booster.predict(X[:5]).tolist()
"""


def test_lightgbm_import_leaves_sklearn_out_and_importable():
    code = f"""
import json, sys
import numpy as np
before = "sklearn" in sys.modules
from nasctl.latency._lgb import import_lightgbm, lightgbm as lgb
assert import_lightgbm() is lgb is sys.modules["lightgbm"]
after = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "pandas", "dask"))
{_TRAIN}
from sklearn.linear_model import LogisticRegression
sk_ok = LogisticRegression().fit(X, y > 0).score(X, y > 0) > 0.8
print(json.dumps({{"before": before, "after": after, "train_ok": train_ok, "again": again, "sk_ok": bool(sk_ok)}}))
"""
    out = _python(code)
    assert out == {"before": False, "after": [], "train_ok": True, "again": True, "sk_ok": True}


def test_lightgbm_import_after_sklearn_is_unchanged():
    code = f"""
import json, sys
import numpy as np
import sklearn
from nasctl.latency._lgb import lightgbm as lgb
{_TRAIN}
m = lgb.LGBMRegressor(n_estimators=5, verbose=-1, n_jobs=1).fit(X, y)
print(json.dumps({{"sklearn_api": lgb.compat.SKLEARN_INSTALLED, "train_ok": train_ok, "fit": m.n_features_in_}}))
"""
    assert _python(code) == {"sklearn_api": True, "train_ok": True, "fit": 3}


def test_every_lightgbm_import_goes_through_the_helper():
    plain = []
    for path in sorted((ROOT / "nasctl").rglob("*.py")):
        if path == ROOT / "nasctl/latency/_lgb.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] == "lightgbm" for n in names):
                plain.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert plain == [], "import lightgbm through nasctl.latency._lgb (see its docstring)"
