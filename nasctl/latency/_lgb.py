"""LightGBM without its optional scikit-learn / pandas / dask imports.

``import lightgbm`` (4.x) imports scikit-learn, pandas and dask in ``lightgbm.compat`` when
they are installed, only to offer its scikit-learn estimators (``LGBMRegressor`` ...),
``lightgbm.cv``'s stratified and ranking folds, and pandas inputs. nasctl uses none of
them (``Booster``, ``Dataset`` and ``train`` on numpy arrays), and scikit-learn alone (with
the parts of SciPy it pulls in) is about 1.3 s of the ~2 s that ``nasctl estimate
model.onnx`` took. Every lightgbm import in nasctl goes through :func:`import_lightgbm`::

    from nasctl.latency._lgb import lightgbm as lgb   # inside the function that needs it

It imports lightgbm with those packages made unimportable for the duration of that one
import, when they are not already imported, and then puts ``sys.modules`` back as it was:
a later ``import sklearn`` (the linear probe, the digits data) imports scikit-learn
normally. When scikit-learn was already imported, or lightgbm already was, nothing is
blocked and lightgbm is imported (or returned) as usual.

What a process that imported lightgbm this way loses, lightgbm deciding once at its
import: ``lightgbm.LGBMRegressor`` and the other scikit-learn estimators raise
"scikit-learn is required", ``lightgbm.cv`` needs ``stratified=False`` (or explicit
``folds``), and pandas DataFrames are not recognised as input. Code that needs those should
import scikit-learn before lightgbm is first imported.
"""

from __future__ import annotations

import sys
from types import ModuleType

# What lightgbm.compat tries to import and nasctl never uses through lightgbm.
OPTIONAL = ("sklearn", "pandas", "dask", "distributed")


def import_lightgbm() -> ModuleType:
    """The ``lightgbm`` module, imported without scikit-learn, pandas or dask unless they
    are imported already (see the module docstring)."""
    if "lightgbm" in sys.modules:
        return sys.modules["lightgbm"]
    if "sklearn" in sys.modules:  # the cost is paid already: keep lightgbm's full API
        import lightgbm

        return lightgbm
    # ``None`` in sys.modules makes ``import NAME`` (and of its submodules) raise ImportError
    blocked = [name for name in OPTIONAL if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import lightgbm
    finally:
        for name in blocked:
            if sys.modules.get(name, ...) is None:  # ours: remove it, leave anything else alone
                del sys.modules[name]
    return lightgbm


def __getattr__(name: str) -> ModuleType:
    # ``from nasctl.latency._lgb import lightgbm``: a one-line stand-in for ``import lightgbm``
    if name == "lightgbm":
        return import_lightgbm()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
