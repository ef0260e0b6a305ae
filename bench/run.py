"""``make bench``: run every benchmark, print it, write ``bench/results/<name>.json``."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    from bench import anomaly, capacity, forecast, media, pit, prefetch, ranking, response, serve

    settings = Settings()
    RESULTS.mkdir(exist_ok=True)
    only = sys.argv[1:]
    benches = {
        "serve": lambda: serve.run(settings),
        "pit": lambda: pit.run(settings),
        "ranking": lambda: ranking.run(settings),
        "prefetch": lambda: prefetch.run(settings),
        "capacity": lambda: capacity.run(settings),
        "forecast": lambda: forecast.run(settings),
        "media": lambda: media.run(settings),
        "anomaly": lambda: anomaly.run(),
        "response": lambda: response.run(),
    }
    benches = {k: v for k, v in benches.items() if not only or k in only}
    failed = 0
    for name, fn in benches.items():
        try:
            result = fn()
        except RuntimeError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        result["meta"] = {
            "at": datetime.now(UTC).isoformat(),
            "host": platform.node(),
            "python": platform.python_version(),
        }
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({name: result}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
