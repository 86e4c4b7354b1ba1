"""The zero-shot scorer: a training-free score of the arch at initialisation.

``--proxy NAME`` uses one registered score (``nasctl.zeroshot.proxies``); ``vote:A,B,C``
the mean percentile of several. A score whose value is a rank (a vote, AZ-NAS) ranks
against a fixed reference sample of the space, scored once before the first trial and
kept in the run folder (``reference.json``), so a trial's value never drifts as trials
accumulate and a resumed run scores exactly as the first one did.

A score that comes out NaN or infinite (a network whose activations blow up) gets the
worst value and a ``proxy_warning`` in the trial record; it does not stop the search.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasctl.errors import NasctlError
from nasctl.search.base import Column, Progress

if TYPE_CHECKING:
    from nasctl.arch import Arch
    from nasctl.search.config import SearchConfig
    from nasctl.space import SearchSpace

REFERENCE_FILE = "reference.json"
REFERENCE_SEED = 12345  # the reference sample's own stream (not the search's seed: it is fixed)


class ProxyScore:
    """Score = a zero-shot proxy (or a rank vote of several), higher = better."""

    objective = "score"
    label = "zero-shot score at initialisation"
    worst = -1e9  # below every score's range; what a NaN / inf network and an infeasible arch get
    columns = (Column("score", "score", "g"),)
    metrics = ("score", "proxy", "proxy_raw", "proxy_loss", "proxy_seconds", "proxy_warning")
    recoverable: tuple[type[BaseException], ...] = ()
    verb = "scoring"

    def __init__(
        self,
        proxy: str,
        data: str = "digits",
        batch_size: int = 16,
        seed: int = 0,
        reference_size: int = 64,
        out: str | Path | None = None,
    ):
        from nasctl.zeroshot import proxies

        try:
            self.members = proxies.resolve(proxy)
            self.ranked = proxies.is_ranked(proxy)
        except ValueError as exc:
            raise NasctlError(f"--proxy: {exc}") from None
        self.proxy, self.data, self.batch_size, self.seed = proxy, data, batch_size, seed
        self.reference_size, self.out = reference_size, out
        from nasctl.zeroshot.proxies import Batches

        self.batches = Batches(data, batch_size, seed, split_seed=seed)
        self._reference: dict[str, list[float]] | None = None
        self._space: SearchSpace | None = None

    @staticmethod
    def describe(cfg: SearchConfig) -> str:
        """How a trial is scored, for the report."""
        from nasctl.zeroshot.proxies import is_ranked

        proxy = cfg.proxy or DEFAULT_PROXY
        ranked = f", ranked against a fixed sample of {cfg.reference_size} archs" if is_ranked(proxy) else ""
        return (
            f"zero-shot score: {proxy} at initialisation, {cfg.proxy_batch} images of {cfg.data} "
            f"(seed {cfg.seed}){ranked}; no training"
        )

    @classmethod
    def from_config(cls, cfg: SearchConfig, space: SearchSpace | None = None) -> ProxyScore:
        s = cls(cfg.proxy or DEFAULT_PROXY, cfg.data, cfg.proxy_batch, cfg.seed, cfg.reference_size, cfg.out)
        s._space = space
        return s

    # ---- inputs --------------------------------------------------------------------
    @property
    def parts(self) -> list[str]:
        from nasctl.zeroshot.proxies import PROXIES

        return [p for m in self.members for p in PROXIES[m].parts]

    @property
    def uses_labels(self) -> bool:
        from nasctl.zeroshot.proxies import PROXIES

        return any(PROXIES[m].uses_labels for m in self.members)

    def check(self, space: SearchSpace) -> None:
        if self.batch_size < 4:
            raise NasctlError(f"--proxy-batch must be >= 4 (got {self.batch_size})")
        if self.ranked and self.reference_size < 8:
            raise NasctlError(f"--reference must be >= 8 archs (got {self.reference_size})")
        self.batches.for_arch(space.baseline())  # the data loads and fits the arch

    @property
    def loss_kind(self) -> str | None:
        if not self.uses_labels:
            return None
        return "cross-entropy" if self.batches.labelled else "nt-xent (two views)"

    # ---- reference sample ----------------------------------------------------------
    def reference(self, progress: Progress | None = None) -> dict[str, list[float]] | None:
        """Raw parts of every arch of the reference sample (ranked scores only), loaded
        from the run folder when it was scored before with the same settings."""
        if not self.ranked:
            return None
        if self._reference is not None:
            return self._reference
        if self._space is None:
            raise NasctlError("a ranked score needs the space for its reference sample")
        key = {
            "parts": self.parts,
            "members": self.members,
            "size": self.reference_size,
            "seed": REFERENCE_SEED,
            "score_seed": self.seed,
            "batch_size": self.batch_size,
            "data": self.data,
            "space": self._space.to_dict(),
        }
        path = Path(self.out) / REFERENCE_FILE if self.out else None
        if path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError:
                saved = {}
            if saved.get("key") == key:
                self._reference = saved["raw"]
                return self._reference
        archs = self._space.samples(self.reference_size, seed=REFERENCE_SEED)
        raw: dict[str, list[float]] = {p: [] for p in self.parts}
        for i, arch in enumerate(archs):
            if progress:
                progress({"event": "reference", "done": i, "total": len(archs)})
            values, _ = self._raw(arch)
            for p in self.parts:
                raw[p].append(values[p])
        self._reference = raw
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "raw": raw}, allow_nan=True) + "\n")
            os.replace(tmp, path)
        return raw

    # ---- scoring -------------------------------------------------------------------
    def _raw(self, arch: Arch) -> tuple[dict[str, float], list[str]]:
        """Every member's raw parts; a non-finite part is kept as -inf (ranks lowest)."""
        from nasctl.zeroshot.proxies import compute_or_nan

        batch = self.batches.for_arch(arch)
        raw: dict[str, float] = {}
        bad: list[str] = []
        for m in self.members:
            values, error = compute_or_nan(m, arch, batch, self.seed)
            if error:
                bad.append(f"{m}: {error}")
            for k, v in values.items():
                if not math.isfinite(v):
                    if not any(b.startswith(f"{m}:") for b in bad):
                        bad.append(f"{m}: {k} is {v}")
                    v = float("-inf")
                raw[k] = float(v)
        return raw, bad

    def value(self, raw: dict[str, float]) -> float:
        from nasctl.zeroshot.proxies import score_value

        return score_value(self.proxy, raw, self.reference())

    def __call__(self, arch: Arch, progress: Progress | None = None) -> dict[str, Any]:
        self.reference(progress)
        t = time.perf_counter()
        raw, bad = self._raw(arch)
        score = self.value(raw)
        warning = None
        if bad or not math.isfinite(score):
            score = self.worst
            warning = "non-finite score, recorded as the worst: " + "; ".join(bad or ["combined value not finite"])
        return {
            "score": float(score),
            "proxy": self.proxy,
            "proxy_raw": json.dumps({k: (v if math.isfinite(v) else None) for k, v in raw.items()}),
            "proxy_loss": self.loss_kind,
            "proxy_seconds": round(time.perf_counter() - t, 4),
            "proxy_warning": warning,
        }


# The score that ranked archs of the default space best against trained accuracy
# (``nasctl proxy-eval``, 60 archs x 2 seeds: Kendall tau 0.22; no training-free score
# beat it, nor ``params``). Re-run proxy-eval on your own space and task before trusting it.
DEFAULT_PROXY = "flops"
