from serving.rules import RuleConfig, Scored, apply_rules


def items(spec):
    """spec: (author, score, in_network) per post; post ids 1..n."""
    return [Scored(i + 1, a, s, n) for i, (a, s, n) in enumerate(spec)]


def test_page_is_best_first_and_limited():
    page = apply_rules(items([(1, 0.1, True), (2, 0.9, True), (3, 0.5, True)]), limit=2)
    assert [i.post_id for i in page] == [2, 3]


def test_seen_posts_and_blocked_authors_are_never_shown_even_to_fill_the_page():
    page = apply_rules(
        items([(1, 0.9, True), (2, 0.8, True), (3, 0.7, True)]),
        limit=3,
        seen={1},
        blocked_authors={3},
    )
    assert [i.post_id for i in page] == [2]


def test_author_diversity_holds_back_a_third_post_of_one_author():
    spec = [(7, 0.9, True), (7, 0.8, True), (7, 0.7, True), (8, 0.1, True)]
    page = apply_rules(items(spec), limit=3)
    assert [i.post_id for i in page] == [1, 2, 4]


def test_out_of_network_share_is_capped():
    spec = [(1, 0.9, False), (2, 0.8, False), (3, 0.7, False), (4, 0.1, True), (5, 0.05, True)]
    page = apply_rules(items(spec), limit=4, config=RuleConfig(max_out_of_network_share=0.5))
    assert sum(not i.in_network for i in page[:4]) <= 2
    assert {4, 5} <= {i.post_id for i in page}


def test_backfill_relaxes_soft_rules_when_the_page_would_be_short():
    spec = [(7, 0.9, True), (7, 0.8, True), (7, 0.7, True)]
    page = apply_rules(items(spec), limit=3)
    assert [i.post_id for i in page] == [1, 2, 3]
    page = apply_rules(items(spec), limit=3, config=RuleConfig(backfill=False))
    assert [i.post_id for i in page] == [1, 2]
