"""The retraining pipeline's state: its options and summary, each step's typed output (a frozen
dataclass that ``state.json`` records under ``steps.<name>.out``), and the run folder that holds
them (:class:`Run`). :mod:`pipelines.retrain` runs the steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self, TypeVar

import pandas as pd

from pipelines.gate import MetricCheck

TERMINAL = ("promoted", "refused", "stopped", "nothing-new")


@dataclass
class RetrainSummary:
    run_id: str
    status: str
    message: str
    folder: str
    window: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    resumed: bool = False


# -- what the steps record ------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOutput:
    """What a step hands on, as ``state.json`` records it under ``steps.<name>.out``: by default
    the fields in declaration order (a JSON object, byte for byte what the run folders hold)."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, out: Mapping[str, Any]) -> Self:
        return cls(**out)


OutT = TypeVar("OutT", bound=StepOutput)


@dataclass(frozen=True)
class ExportOut(StepOutput):
    window_start: str  # ISO 8601, exclusive: the lake's watermark when the export ran
    window_end: str  # ISO 8601, inclusive: impressions served up to here
    rows: dict[str, int]  # rows exported per table, and the partitions read

    @property
    def window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        return pd.Timestamp(self.window_start), pd.Timestamp(self.window_end)


@dataclass(frozen=True)
class Stats(StepOutput):
    """A validation's figures, recorded as a flat object (``{"rows": ..., "signal_auc": ...}``)."""

    stats: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return dict(self.stats)

    @classmethod
    def from_json(cls, out: Mapping[str, Any]) -> Self:
        return cls(dict(out))


class ExportChecks(Stats):
    """The export's validation figures (step ``validate_export``)."""


class TrainingSetChecks(Stats):
    """The training set's validation figures (step ``validate``); later runs compare with them."""


@dataclass(frozen=True)
class CommitOut(StepOutput):
    added: dict[str, int]  # rows each lake table gained, recorded as a flat object

    def to_json(self) -> dict[str, Any]:
        return dict(self.added)

    @classmethod
    def from_json(cls, out: Mapping[str, Any]) -> Self:
        return cls(dict(out))


@dataclass(frozen=True)
class FeaturesOut(StepOutput):
    tables: dict[str, int]  # rows of each feature table
    popular: int  # posts in the popular list published to Redis
    materialized_to: str  # ISO 8601


@dataclass(frozen=True)
class TrainingSetOut(StepOutput):
    rows: int


@dataclass(frozen=True)
class TrainOut(StepOutput):
    train_rows: int
    holdout_rows: int


@dataclass(frozen=True)
class ForecasterOut(StepOutput):
    """Refitted on ``hours`` of history, or not, and why; a field that does not apply is left
    out of the record."""

    fitted: bool
    hours: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_json().items() if v is not None}


@dataclass(frozen=True)
class EvaluateOut(StepOutput):
    champion: str | None  # the champion pair's label; None when there was none to score
    rows: int


@dataclass(frozen=True)
class GateOut(StepOutput):
    promote: bool
    reason: str
    champion: str | None
    checks: tuple[MetricCheck, ...]

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {"checks": [asdict(c) for c in self.checks]}

    @classmethod
    def from_json(cls, out: Mapping[str, Any]) -> Self:
        return cls(**{**out, "checks": tuple(MetricCheck(**c) for c in out["checks"])})


@dataclass(frozen=True)
class RegisterOut(StepOutput):
    versions: dict[str, str]  # registered model name → version now @challenger


@dataclass(frozen=True)
class PromoteOut(StepOutput):
    promoted: dict[str, str]  # registered model name → version now @champion


# -- the run --------------------------------------------------------------------------------------
