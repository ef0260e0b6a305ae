"""``docs/RESULTS.md``, generated from the benchmark JSON committed under ``docs/results/``.

Figures are never edited by hand: ``make bench`` writes ``bench/results/<name>.json`` (ignored
by git), ``make results`` records them under ``docs/results/`` and renders this page from them;
``python -m bench.results`` alone re-renders from what is recorded (a unit test checks that the
committed page is what the committed JSON gives). The story behind the figures — what was
tried, what held, what did not and why — is ``docs/HISTORY.md``, written by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / "bench" / "results"
RECORDED = ROOT / "docs" / "results"
RESULTS_MD = ROOT / "docs" / "RESULTS.md"

# What each benchmark measures, in the order the page shows them.
ABOUT = {
    "serve": "First pages (`limit=20`, ~456 candidates) of random readers of the bench world, "
    "open loop (bench/load.py) at 50, 80, 100 and 200 req/s, against the floor `GET /v1/ping` "
    "on the same replicas (same ingress, key check and rate limit), everything on the same 2 "
    "cores. `cpu_ms_per_request_*`: the machine's busy CPU (/proc/stat) ÷ requests answered at "
    "100 req/s (at capacity if lower), by process group in `cpu_ms_by_group`; "
    "`cpu_ms_marginal_feed`: the slope between 50 and 100 req/s; `capacity_rps_*`: the highest "
    "rate in 10 req/s steps answered with p99 ≤ 250 ms and no error (a degraded page is an "
    "error). `feature_read_speedup_500`: Feast's `get_online_features` ÷ our reader on the "
    "same 500 rows. Sessions (bench/sessions.py, `limit=10`): machine CPU per continued page "
    "(cursor) against `GET /v1/ping`, and capacity with first pages only against the "
    "simulator's scrolling mix. docs/PERFORMANCE.md explains the figures.",
    "ranking": "Each world generated, trained (LightGBM light ranker, PyTorch MMoE heavy "
    "ranker) and judged against the simulator's truth on held-out days; `learnability` is "
    "the structured-MLE reference fitted on the same rows (evaluation/learnability.py).",
    "pit": "Point-in-time join for training sets: Feast's historical retrieval ÷ ours, time "
    "and peak memory, at growing entity-row counts.",
    "prefetch": "Trace replay of each world's media requests: hit ratio of demand-only "
    "policies (LRU, S3-FIFO, Belady) and of prefetching from the ranker's predictions "
    "(ours, and an oracle prefetcher), 1% cache, 10% prefetch budget.",
    "capacity": "Replica plans from the forecaster against a reactive autoscaler and perfect "
    "foresight, replayed minute by minute over planned weeks; worst over variants at the top, "
    "each variant below.",
    "media": "Photo renditions (bench/media.py): the shipped real photos and a phone-shaped "
    "crop of each, every width they reach (never upscaled) as progressive JPEG, WebP and AVIF, "
    "each at the lowest quality holding the SSIM (luma) that a plain q85 JPEG of it holds; "
    "Pillow and libvips side by side, each in its own worker process. `bytes_vs_baseline`: "
    "total bytes ÷ plain baseline JPEG q85 at the same widths. docs/MEDIA.md explains it.",
    "forecast": "Rolling-origin backtests of the traffic forecaster (MASE against seasonal "
    "naive and MSTL, interval coverage) on four simulated traffic variants.",
}
MAX_COLUMNS = 8  # a dict of more rows than this is shown one row per entry, not transposed


def record(src: Path = RUN_DIR, dst: Path = RECORDED) -> list[Path]:
    """Copy the last run's JSON (``make bench``) to where the page is rendered from."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(src.glob("*.json")):
        shutil.copyfile(path, dst / path.name)
        copied.append(dst / path.name)
    return copied


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        if v == 0:
            return "0"
        a = abs(v)
        if v.is_integer() or a >= 100:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.001:
            return f"{v:.3f}" if a >= 1 else f"{v:.4f}"
        return f"{v:.2e}"
    if v is None:
        return "—"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def _flat(d: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Scalars of a dict, nested dicts flattened with dotted names up to ``depth`` levels."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if _scalar(v):
            out[prefix + k] = v
        elif isinstance(v, dict) and depth > 1:
            out |= _flat(v, f"{prefix}{k}.", depth - 1)
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def _rows(name: str, d: dict[str, Any]) -> list[str]:
    """A dict whose values are dicts: one column per entry (transposed) when there are few."""
    entries = {k: _flat(v) for k, v in d.items() if isinstance(v, dict)}
    keys: list[str] = []
    for flat in entries.values():
        keys += [k for k in flat if k not in keys]
    if not keys:
        return []
    lines = [f"**{name}**", ""]
    if len(entries) <= MAX_COLUMNS:
        rows = [[f"`{k}`", *(_fmt(e.get(k)) for e in entries.values())] for k in keys]
        return lines + _table(["", *entries], rows)
    rows = [[f"`{n}`", *(_fmt(e.get(k)) for k in keys)] for n, e in entries.items()]
    return lines + _table(["", *keys], rows)


def section(name: str, data: dict[str, Any]) -> list[str]:
    meta = data.get("meta", {})
    lines = [f"## {name}", ""]
    if name in ABOUT:
        lines += [ABOUT[name], ""]
    if meta:
        lines += [
            f"`python -m bench.run {name}` on {meta.get('at', '?')[:16].replace('T', ' ')} UTC, "
            f"host `{meta.get('host', '?')}`, Python {meta.get('python', '?')}.",
            "",
        ]
    body = {k: v for k, v in data.items() if k != "meta"}
    scalars = {k: v for k, v in body.items() if _scalar(v)}
    if scalars:
        lines += _table(["figure", "value"], [[f"`{k}`", _fmt(v)] for k, v in scalars.items()])
    for k, v in body.items():
        if not isinstance(v, dict):
            continue
        if all(isinstance(x, dict) for x in v.values()):
            lines += _rows(k, v)
        else:
            flat = _flat(v)
            if flat:
                lines += [f"**{k}**", ""]
                lines += _table(["figure", "value"], [[f"`{a}`", _fmt(b)] for a, b in flat.items()])
    return lines


def render(folder: Path = RECORDED) -> str:
    """The whole page from the recorded JSON files."""
    found = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    order = [n for n in ABOUT if n in found] + sorted(n for n in found if n not in ABOUT)
    lines = [
        "# Measured results",
        "",
        "<!-- Generated from docs/results/*.json by `make results` (bench/results.py); do not "
        "edit. -->",
        "",
        "Every figure below comes from the JSON that `make bench` wrote, recorded under "
        "`docs/results/`. The machine: 2 cores, 24 GiB, shared by the whole stack and the load "
        "generator, so absolute latencies are indicative only; compare side by side within one "
        "run. What the figures mean, what was tried and why: [HISTORY.md](HISTORY.md).",
        "",
        "Benchmarks: " + ", ".join(f"[{n}](#{n})" for n in order) + ".",
        "",
    ]
    for name in order:
        lines += section(name, found[name])
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render docs/RESULTS.md from docs/results/.")
    parser.add_argument(
        "--record",
        action="store_true",
        help="First copy bench/results/*.json (the last `make bench`) to docs/results/.",
    )
    args = parser.parse_args(argv)
    if args.record:
        for path in record():
            print(f"recorded {path.relative_to(ROOT)}")
    RESULTS_MD.write_text(render())
    print(f"wrote {RESULTS_MD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
