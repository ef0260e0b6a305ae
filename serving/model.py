"""Load the rankers an alias points at, from the configured MLflow registry only, and keep them
current: :class:`ModelHolder` swaps the whole pair when the alias moves.

Only non-pickle formats are loaded: LightGBM's model text (``lgb.Booster(model_file=...)``) and
a torch state dict read with ``weights_only=True``. An artifact in any other format is refused.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import lightgbm as lgb
import mlflow
import yaml

from core.settings import Settings
from serving.compiled import Compiled, compile_light
from training import registry
from training.heavy import HeavyModel

log = logging.getLogger("feedcast.serving.model")


class UnsafeModelError(ValueError):
    """A registered artifact is not in one of the formats serving loads (no pickles)."""


@dataclass(frozen=True)
class Rankers:
    light: lgb.Booster
    light_version: str
    heavy: HeavyModel
    heavy_version: str
    light_name: str
    heavy_name: str
    # The light ranker compiled to native code (serving.compiled); None: LightGBM's predict.
    light_compiled: Compiled | None = None

    @property
    def label(self) -> str:
        """One label for the pair, e.g. ``feed_ranker/3+feed_ranker_heavy/3``."""
        return f"{self.light_name}/{self.light_version}+{self.heavy_name}/{self.heavy_version}"


def _light_from(folder: Path) -> lgb.Booster:
    """The Booster of an MLflow LightGBM model folder, from its model text only."""
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = (meta.get("flavors") or {}).get("lightgbm") or {}
    data = str(flavor.get("data", ""))
    if flavor.get("model_class") != "lightgbm.basic.Booster" or not data.endswith(".lgb"):
        raise UnsafeModelError(
            f"{folder.name}: not a LightGBM Booster saved as model text ({flavor or 'no flavor'})"
        )
    return lgb.Booster(model_file=str(folder / data))


def _download(uri: str, dst: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst))


@dataclass(frozen=True)
class Pointer:
    """Where an alias points: both versions and the run each came from."""

    light_version: str
    heavy_version: str
    same_run: bool


def resolve(settings: Settings, alias: str) -> Pointer:
    """The versions behind ``alias`` (one registry round trip per model)."""
    client = registry.configure(settings)
    lv = client.get_model_version_by_alias(settings.model_name, alias)
    hv = client.get_model_version_by_alias(settings.heavy_model_name, alias)
    return Pointer(str(lv.version), str(hv.version), lv.run_id == hv.run_id)


def load_versions(settings: Settings, light_version: str, heavy_version: str) -> Rankers:
    """Both rankers at the given registered versions."""
    registry.configure(settings)
    with tempfile.TemporaryDirectory() as tmp:
        booster = _light_from(_download(f"models:/{settings.model_name}/{light_version}", tmp))
        local = _download(f"models:/{settings.heavy_model_name}/{heavy_version}", tmp)
        found = [p.parent for p in local.rglob("spec.json")]
        if len(found) != 1:
            raise UnsafeModelError(
                f"{settings.heavy_model_name}/{heavy_version}: no state dict + spec artifacts"
            )
        heavy = HeavyModel.load(found[0])
    return Rankers(
        booster,
        light_version,
        heavy,
        heavy_version,
        settings.model_name,
        settings.heavy_model_name,
    )


def load_alias(settings: Settings, alias: str | None = None) -> Rankers:
    """Both rankers behind ``@alias``."""
    p = resolve(settings, alias or settings.model_alias)
    return load_versions(settings, p.light_version, p.heavy_version)


class ModelHolder:
    """The rankers one replica serves, replaced whole when the alias moves.

    A request reads :attr:`current` once and uses that pair to the end, so no response mixes two
    versions. :meth:`refresh` loads a new pair beside the old one and swaps a single reference;
    the pair it replaced stays as :attr:`previous` (the fallback when the current one fails).
    While the registry cannot be read or the new pair cannot be loaded, the current pair serves
    on; a replica that never loaded a pair serves the heuristic and says so.
    """

    def __init__(self, settings: Settings, alias: str | None = None) -> None:
        self.settings = settings
        self.alias = alias or settings.model_alias
        self.current: Rankers | None = None
        self.previous: Rankers | None = None
        self.error: str | None = None
        self._lock = threading.Lock()  # one refresh at a time (poller and reconfigure)
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Load the pair behind the alias if it moved; True when a new pair was swapped in."""
        with self._lock:
            try:
                p = resolve(self.settings, self.alias)
                cur = self.current
                if cur and (cur.light_version, cur.heavy_version) == (
                    p.light_version,
                    p.heavy_version,
                ):
                    self.error = None
                    return False
                if not p.same_run:  # caught between the two alias moves: wait for the second
                    self.error = "alias points at versions of different runs"
                    return False
                new = load_versions(self.settings, p.light_version, p.heavy_version)
                if self.settings.serve_compile_light:
                    new = replace(
                        new,
                        light_compiled=compile_light(new.light, self.settings.home / "compiled"),
                    )
            except Exception as exc:  # registry down, alias missing, unsafe artifact
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("model refresh failed: %s", self.error)
                return False
            self.previous, self.current, self.error = self.current, new, None
            log.info("serving %s", new.label)
            return True

    def poll(self) -> threading.Thread:
        """Refresh every ``settings.model_poll_s`` seconds in a daemon thread."""

        def loop() -> None:
            while not self._stop.wait(self.settings.model_poll_s):
                self.refresh()

        t = threading.Thread(target=loop, name="model-poll", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()
