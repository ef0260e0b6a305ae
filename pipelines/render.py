"""Terminal rendering of feeds and metrics."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def feed_table(page: dict[str, Any]) -> Table:
    """One feed page: slot, post, author, source, media kind, the score (only when the page was
    asked for with debug) and the URL of the post's full rendition at the edge."""
    scored = any(isinstance(i.get("score"), float) for i in page["items"])
    columns = ["#", "post_id", "author_id", "source", "media", *(["score"] if scored else [])]
    table = Table(
        *columns,
        "media URL (full)",
        title=f"feed of user {page['user_id']} — page {page.get('page', 0) + 1} "
        f"({page.get('session', 'new')} session) — model {page['model_version']}"
        + (f" — {page['candidates']} candidates" if page.get("candidates") else "")
        + (f" — degraded: {', '.join(page['degraded'])}" if page["degraded"] else ""),
    )
    for item in page["items"]:
        full = next((r["url"] for r in item.get("renditions", []) if r["variant"] == "full"), "")
        cells = [
            str(item.get("position", 0) + 1),
            str(item["post_id"]),
            str(item["author_id"]),
            item.get("source", ""),
            item.get("media_kind", ""),
        ]
        if scored:
            cells.append(f"{item['score']:.3f}")
        table.add_row(*cells, full)
    return table


def metrics_table(m: dict[str, float]) -> Table:
    table = Table(
        "policy (held-out day, full candidate sets)",
        "NDCG@10 of true utility",
        "× chrono",
        title="rankers judged against the simulator's truth",
    )
    for key, name in (
        ("oracle", "oracle (ceiling)"),
        ("heavy", "heavy ranker (PyTorch MMoE)"),
        ("light", "light ranker (LightGBM)"),
        ("popular", "global popularity"),
        ("chrono", "reverse chronological"),
    ):
        v = m[f"ndcg10_{key}"]
        table.add_row(name, f"{v:.4f}", f"{v / m['ndcg10_chrono']:.2f}")
    table.caption = (
        f"AUC like {m['auc_like']:.4f} (Bayes {m['auc_like_bayes']:.4f}), "
        f"comment {m['auc_comment']:.4f} ({m['auc_comment_bayes']:.4f}), "
        f"save {m['auc_save']:.4f} ({m['auc_save_bayes']:.4f}); ECE like "
        f"{m['ece_p_like']:.4f} comment {m['ece_p_comment']:.4f} save {m['ece_p_save']:.4f}, "
        f"dwell (relative) {m['ece_e_dwell']:.4f}; SNIPS {m['snips_estimate']:.3f} vs true "
        f"{m['true_value']:.3f} ({m['snips_rel_error']:.1%}); "
        f"{int(m['holdout_requests'])} requests"
    )
    return table


def figures_table(title: str, figures: dict[str, object]) -> Table:
    """A two-column table of named figures (floats to four places), as the CLIs print them."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, v in figures.items():
        table.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table
