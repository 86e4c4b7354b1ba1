"""The data nasctl ships: fitted latency estimators and search-space YAML files.

Both are package data (``nasctl.estimators`` and ``nasctl.search_spaces``), found with
``importlib.resources``, so an installed wheel finds them as an editable checkout does.
All helpers return real filesystem paths. ``NASCTL_ESTIMATORS`` names another folder to
take the shipped estimators from (files named as below, ``.json.gz`` or ``.json``).
"""

from __future__ import annotations

import atexit
import os
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

from nasctl.errors import NasctlError

# device name -> file stem in the estimators folder
SHIPPED_ESTIMATORS = {
    "cpu": "cpu",
    "sim-npu": "sim-npu-p16",
    "sim-npu-p16": "sim-npu-p16",
    "sim-npu-p32": "sim-npu-p32",
}
ESTIMATOR_SUFFIX = ".json.gz"  # the shipped format: see LatencyEstimator.save

_extracted = ExitStack()  # a zipped install: as_file extracts the folder (Python >= 3.12) until exit
atexit.register(_extracted.close)


def _package_dir(package: str) -> Path:
    return _extracted.enter_context(resources.as_file(resources.files(package)))


def estimators_dir() -> Path:
    """The folder of shipped estimators (or ``$NASCTL_ESTIMATORS``)."""
    override = os.environ.get("NASCTL_ESTIMATORS")
    return Path(override) if override else _package_dir("nasctl.estimators")


def shipped_estimator(name: str) -> Path:
    """The file of a shipped estimator by device name (``cpu``, ``sim-npu-p16``, ...)."""
    if name not in SHIPPED_ESTIMATORS:
        raise NasctlError(f"no shipped estimator {name!r} (shipped: {', '.join(SHIPPED_ESTIMATORS)})")
    folder, stem = estimators_dir(), SHIPPED_ESTIMATORS[name]
    for suffix in (ESTIMATOR_SUFFIX, ".json"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    path = folder / f"{stem}{ESTIMATOR_SUFFIX}"
    raise NasctlError(f"the shipped {name} estimator is missing ({path}); run `nasctl fit-estimator`")


def search_spaces_dir() -> Path:
    """The folder of shipped search spaces (YAML files and the schema's README.md)."""
    return _package_dir("nasctl.search_spaces")


def shipped_spaces() -> list[Path]:
    """The shipped search-space files, sorted by name."""
    return sorted(search_spaces_dir().glob("*.yaml"))
