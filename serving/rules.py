"""Page rules as plain Python: filters, author diversity, network balance, backfill."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scored:
    post_id: int
    author_id: int
    score: float
    in_network: bool


@dataclass(frozen=True)
class RuleConfig:
    max_per_author: int = 2  # author diversity on one page
    max_out_of_network_share: float = 0.3  # in/out-of-network balance
    backfill: bool = True  # fill a short page with what the soft rules held back


def apply_rules(
    items: Sequence[Scored],
    limit: int,
    *,
    seen: Collection[int] = (),
    blocked_authors: Collection[int] = (),
    config: RuleConfig | None = None,
) -> list[Scored]:
    """Best-first page of at most ``limit`` items.

    Hard filters (never shown): posts already seen, authors the user blocked. Soft rules (may
    be relaxed by backfill when they would leave the page short): at most ``max_per_author``
    posts per author, at most ``max_out_of_network_share`` of the page out of network.
    """
    cfg = config or RuleConfig()
    eligible = [i for i in items if i.post_id not in seen and i.author_id not in blocked_authors]
    eligible.sort(key=lambda i: i.score, reverse=True)
    max_oon = int(cfg.max_out_of_network_share * limit)
    page: list[Scored] = []
    held: list[Scored] = []
    per_author: dict[int, int] = {}
    oon = 0
    for item in eligible:
        if len(page) == limit:
            break
        if per_author.get(item.author_id, 0) >= cfg.max_per_author or (
            not item.in_network and oon >= max_oon
        ):
            held.append(item)
            continue
        page.append(item)
        per_author[item.author_id] = per_author.get(item.author_id, 0) + 1
        oon += not item.in_network
    if cfg.backfill and len(page) < limit:
        page.extend(held[: limit - len(page)])
        page.sort(key=lambda i: i.score, reverse=True)
    return page
