"""``feedcast ops ...``: what the monitoring sees (Prometheus and Alertmanager of the stack)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import redis
import typer
from rich.table import Table

from core import cache, lease
from pipelines import responder
from pipelines.cli_common import console, fail, settings
from stack import monitoring

ops_app = typer.Typer(
    help="Operations: SLO burn, firing alerts, the responder's last actions and scrape "
    "targets, from the stack's Prometheus, Alertmanager and Redis (`feedcast stack up`).",
    no_args_is_help=True,
)

BUDGET = 0.001  # the SLOs' error budget (monitoring/rules.yml): 99.9%

# name -> (PromQL, what it is)
FIGURES = {
    "requests_per_s": (
        "sum(rate(ray_feedcast_requests_total[5m]))",
        "/v1 answers per second, 5 min",
    ),
    "errors_5m": ("feedcast:errors:ratio_rate5m", "5xx share of answers, 5 min"),
    "errors_1h": ("feedcast:errors:ratio_rate1h", "5xx share of answers, 1 h"),
    "slow_5m": ("feedcast:slow:ratio_rate5m", "feed pages over 250 ms, 5 min"),
    "slow_1h": ("feedcast:slow:ratio_rate1h", "feed pages over 250 ms, 1 h"),
    "degraded_1m": (
        "sum(feedcast:degraded:ratio_rate1m)",
        "requests on a degraded path, 1 min (all steps)",
    ),
}

# series -> (the live rate, 5 min; the band's edges as the alerts widen them)
BAND = {
    name: (
        f"feedcast:{name}:rate5m",
        f'feedcast:band_low:rps{{series="{name}"}}',
        f'feedcast:band_high:rps{{series="{name}"}}',
    )
    for name in ("requests", "uploads")
}


def status_of(s: Any) -> dict[str, Any]:
    """Everything ``ops status`` shows, as data: figures (None: no series yet), the SLOs' burn
    rates (1.0 spends the budget exactly in the SLO's 30 days), alerts and targets."""
    figures = {k: monitoring.scalar(s, q) for k, (q, _) in FIGURES.items()}
    burn: dict[str, float | None] = {}
    for k in ("errors_5m", "errors_1h", "slow_5m", "slow_1h"):
        value = figures[k]
        burn[k] = None if value is None else value / BUDGET
    held = [
        {
            "alert": a["labels"].get("alertname"),
            "severity": a["labels"].get("severity"),
            "state": a.get("status", {}).get("state"),
            "since": a.get("startsAt"),
            "summary": a.get("annotations", {}).get("summary"),
        }
        for a in monitoring.alerts(s)
    ]
    band = {
        name: {
            key: monitoring.scalar(s, q)
            for key, q in zip(("live_rps", "low_rps", "high_rps"), qs, strict=True)
        }
        for name, qs in BAND.items()
    }
    floor: dict[str, Any] | None
    try:
        client = cache.client(s)
        actions: list[dict[str, Any]] | None = responder.recent_actions(s, client)
        held_lease = lease.current(client, lease.lease_key(s))
        floor = {"replicas": 0} if held_lease is None else asdict(held_lease)
    except redis.RedisError:
        actions, floor = None, None  # shown as unknown, not as none
    return {
        "prometheus": monitoring.prometheus_url(s),
        "figures": figures,
        "burn_rate": burn,
        "band": band,
        "alerts": held,
        "actions": actions,
        "floor_lease": floor,
        "targets": monitoring.targets(s),
    }


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


@ops_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """SLO burn, firing alerts, the responder's last actions and scrape targets, now."""
    s = settings()
    try:
        out = status_of(s)
    except httpx.HTTPError as exc:
        fail(
            f"monitoring unreachable at {monitoring.prometheus_url(s)} "
            f"({type(exc).__name__}): is the stack up? (feedcast stack up)"
        )
    if as_json:
        print(json.dumps(out, indent=2))
        return
    table = Table("figure", "now", "burn rate", title=f"SLOs (Prometheus {out['prometheus']})")
    for key, (_, what) in FIGURES.items():
        value = out["figures"][key]
        if key == "requests_per_s":
            table.add_row(what, "-" if value is None else f"{value:.1f}", "")
            continue
        burn = out["burn_rate"].get(key)
        table.add_row(what, _pct(value), "" if burn is None else f"{burn:.1f}x")
    console.print(table)
    band = Table("rate", "live / s", "band low", "band high", title="Forecast band (5 min)")
    for name, b in out["band"].items():
        if b["low_rps"] is None:
            band.add_row(name, _num(b["live_rps"]), "no plan", "no plan")
        else:
            mark = "" if b["low_rps"] <= (b["live_rps"] or 0) <= b["high_rps"] else "[red]"
            band.add_row(name, f"{mark}{_num(b['live_rps'])}", _num(b["low_rps"]),
                         _num(b["high_rps"]))  # fmt: skip
    console.print(band)
    floor = out["floor_lease"]
    if floor is None:
        console.print("[yellow]replica-floor lease unknown: Redis unreachable[/yellow]")
    elif floor["replicas"]:
        until = datetime.fromtimestamp(floor["until"], UTC).strftime("%H:%M:%S")
        console.print(
            f"replica-floor lease: [bold]{floor['replicas']}[/bold] feed replicas until {until} "
            f"UTC ({floor['alert']}); `feedcast ops release` ends it"
        )
    else:
        console.print("no replica-floor lease")
    alerts = Table("alert", "severity", "state", "since", "summary", title="Alerts")
    for a in out["alerts"]:
        alerts.add_row(a["alert"], a["severity"], a["state"], a["since"], a["summary"])
    console.print(alerts if out["alerts"] else "[green]no alert firing[/green]")
    if out["actions"] is None:
        console.print("[yellow]last actions unknown: Redis unreachable[/yellow]")
    elif out["actions"]:
        done = Table("at", "action", "alert", "outcome", title="Last actions (alert responder)")
        for a in out["actions"]:
            at = datetime.fromtimestamp(a["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
            done.add_row(at, a["action"], a["alert"], a["outcome"])
        console.print(done)
    else:
        console.print("no action taken")
    targets = Table("scrape target", "up", title="Targets")
    for name, up in sorted(out["targets"].items()):
        targets.add_row(name, "yes" if up else "[red]no[/red]")
    console.print(targets)


@ops_app.command("release")
def release() -> None:
    """End the replica-floor lease the responder granted, now (it would lapse on its own);
    the feed then scales as its plan or Ray's rule says."""
    s = settings()
    try:
        client = cache.client(s)
        old = lease.release(client, lease.lease_key(s))
        if old is not None:
            responder.record(s, client, {
                "action": "release", "alert": old.alert, "fingerprint": "", "severity": "",
                "summary": f"lease of {old.replicas} replicas ended by hand",
                "outcome": "done", "at": round(datetime.now(UTC).timestamp(), 3),
            })  # fmt: skip
    except redis.RedisError as exc:
        fail(f"Redis unreachable ({type(exc).__name__}): nothing released")
    if old is None:
        console.print("no replica-floor lease was in force")
    else:
        console.print(f"released the lease of {old.replicas} feed replicas ({old.alert})")


@ops_app.command("plot")
def plot(
    out: Annotated[Path, typer.Option("--out", help="Where to write the PNG.")] = Path(
        "ops_last_day.png"
    ),
    hours: Annotated[
        float, typer.Option(min=0.1, max=24 * 14, help="How far back (hours).")
    ] = 24.0,
) -> None:
    """The last day (or --hours) as a PNG: the live request and upload rates against the
    forecast band, when each alert fired, and the responder's actions."""
    from pipelines import ops_plot  # lazy: matplotlib (~0.3 s) only for the plot

    s = settings()
    try:
        data = ops_plot.gather(s, hours)
    except httpx.HTTPError as exc:
        fail(
            f"monitoring unreachable at {monitoring.prometheus_url(s)} "
            f"({type(exc).__name__}): is the stack up? (feedcast stack up)"
        )
    ops_plot.plot(data, out)
    fired = sum(len(v) for v in data["alerts"].values())
    console.print(f"wrote {out}  ({len(data['alerts'])} alerts fired {fired} times, "
                  f"{len(data['actions'] or [])} responder actions)")  # fmt: skip
