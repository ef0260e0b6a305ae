"""Terminal rendering of feeds and metrics."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def feed_table(page: dict[str, Any]) -> Table:
    table = Table(
        "#",
        "post_id",
        "author_id",
        "score",
        title=f"feed of user {page['user_id']} — model {page['model_version']}"
        f" — {page['candidates']} candidates"
        + (f" — degraded: {', '.join(page['degraded'])}" if page["degraded"] else ""),
    )
    for i, item in enumerate(page["items"], 1):
        table.add_row(str(i), str(item["post_id"]), str(item["author_id"]), f"{item['score']:.3f}")
    return table


def metrics_table(metrics: dict[str, float]) -> Table:
    table = Table(
        "ranking on the held-out day",
        "NDCG@10 (true utility)",
        title="ranker vs baselines (re-ranking the same logged pages)",
    )
    table.add_row("oracle (ceiling)", f"{metrics['ndcg10_oracle']:.4f}")
    table.add_row("LightGBM ranker @champion", f"{metrics['ndcg10_model']:.4f}")
    table.add_row("reverse chronological", f"{metrics['ndcg10_chrono']:.4f}")
    table.caption = (
        f"AUC(like): model {metrics['auc_like']:.4f}, Bayes-optimal "
        f"{metrics['auc_like_oracle']:.4f}; {int(metrics['holdout_requests'])} pages"
    )
    return table
