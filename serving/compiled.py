"""The light ranker compiled to native code (treelite + tl2cgen), where a C compiler is at hand.

LightGBM's Python ``predict`` walks 120 trees for ~470 rows per request through its C API with
Python around it: ~1.0 ms of CPU here; the same forest compiled to a shared library answers in
~0.34 ms with the same scores (docs/PERFORMANCE.md). The library is built *inside the replica*
from the model text the registry holds (the only format serving loads), and cached on local
disk by the text's sha256, so a replica restart or a second replica on the node reuses it. A
library is never downloaded or shared through the registry: the cache folder holds only what
this node compiled.

Before a compiled forest is used it must give LightGBM's own scores to 1e-6 on a probe matrix
(random rows, NaNs included); otherwise, or when no compiler is found, the replica keeps
LightGBM's ``predict`` and says so in its log. Both answer the same question; only the cost
differs.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np

log = logging.getLogger("feedcast.serving.compiled")
PARITY_TOL = 1e-6


class LightPredictor(Protocol):
    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class Compiled:
    """A compiled forest: ``compiled(x)`` scores the rows of ``x`` (float64, rows × features)."""

    def __init__(self, library: Path, sha256: str) -> None:
        import tl2cgen

        self.library, self.sha256 = library, sha256
        self._tl2cgen = tl2cgen
        self._predictor = tl2cgen.Predictor(str(library), nthread=1, verbose=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        dm = self._tl2cgen.DMatrix(np.ascontiguousarray(x, dtype=np.float64), dtype="float64")
        return np.asarray(self._predictor.predict(dm), dtype=np.float64).reshape(-1)


def model_sha256(booster: lgb.Booster) -> str:
    return hashlib.sha256(booster.model_to_string().encode()).hexdigest()


def compile_light(booster: lgb.Booster, cache_dir: Path) -> Compiled | None:
    """The booster compiled (or found compiled under ``cache_dir`` by its text's sha256),
    checked against LightGBM's own scores; None when it cannot be built or does not agree."""
    if shutil.which("gcc") is None:
        log.warning("no C compiler: the light ranker runs on LightGBM's predict")
        return None
    text = booster.model_to_string()
    sha = hashlib.sha256(text.encode()).hexdigest()
    library = cache_dir / f"light-{sha}.so"
    try:
        if not library.exists():
            _build(text, library)
        compiled = Compiled(library, sha)
        gap = parity_gap(booster, compiled)
    except Exception as exc:  # a toolchain or library problem: the model itself is fine
        log.warning(
            "light ranker not compiled (%s: %s): LightGBM's predict", type(exc).__name__, exc
        )
        return None
    if not gap <= PARITY_TOL:
        log.warning("compiled light ranker differs by %.3g: LightGBM's predict instead", gap)
        library.unlink(missing_ok=True)
        return None
    log.info("light ranker compiled (%s, parity gap %.1g)", library.name, gap)
    return compiled


def parity_gap(booster: lgb.Booster, compiled: LightPredictor, rows: int = 512) -> float:
    """Largest score difference on random rows (a tenth of the cells NaN)."""
    rng = np.random.default_rng(0)
    x = rng.normal(scale=3.0, size=(rows, booster.num_feature()))
    x[rng.random(x.shape) < 0.1] = np.nan
    want = np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)
    return float(np.max(np.abs(compiled(x) - want)))


def _build(text: str, library: Path) -> None:
    """Compile the model text to ``library`` (atomically: a half-written one is never used)."""
    import tl2cgen
    import treelite

    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(text)
        model: Any = treelite.frontend.load_lightgbm_model(str(model_file))
        out = Path(tmp) / library.name
        tl2cgen.export_lib(
            model, toolchain="gcc", libpath=str(out), params={"parallel_comp": 4}, nthread=1
        )
        out.replace(library)
