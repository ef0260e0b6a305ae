"""``python -m bench.learnability [--seed N]``: the structured-MLE reference of
:mod:`evaluation.learnability` on one default world (generated if needed), as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.settings import Settings
from evaluation.learnability import structured_auc
from evaluation.oracle import eval_settings
from pipelines.steps import features_apply
from simulator import writer
from simulator.config import WorldConfig
from simulator.world import generate
from simulator.writer import TRUTH_FILE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Structured-MLE AUC reference, one world.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the default world.")
    args = parser.parse_args(argv)
    config = WorldConfig(seed=args.seed)
    local = eval_settings(Settings(), config)
    if not (local.world_dir / TRUTH_FILE).exists():
        writer.write_parquet(generate(config, progress=True), local.world_dir)
        features_apply(local)
    out: dict[str, Any] = structured_auc(local)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
