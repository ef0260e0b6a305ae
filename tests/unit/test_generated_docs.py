"""The generated pages are current: a setting or a recorded figure changed without `make docs`
fails here, naming the command that fixes it."""

from __future__ import annotations

from bench import results
from core import settings_doc
from core.settings import Settings


def test_config_md_is_generated_from_settings_and_current():
    written = settings_doc.CONFIG_MD.read_text()
    assert written == settings_doc.render(), "docs/CONFIG.md is stale: run `make docs`"
    for name in Settings.model_fields:  # every setting documented, none by hand
        assert f"`FEEDCAST_{name.upper()}`" in written


def test_results_md_is_generated_from_the_recorded_json_and_current():
    recorded = sorted(results.RECORDED.glob("*.json"))
    assert recorded, "no benchmark JSON recorded under docs/results/: run `make bench results`"
    written = results.RESULTS_MD.read_text()
    assert written == results.render(), "docs/RESULTS.md is stale: run `make docs`"
    for path in recorded:
        assert f"## {path.stem}" in written


def test_results_render_formats_nested_figures_as_tables(tmp_path):
    (tmp_path / "toy.json").write_text(
        '{"hit": 0.8271, "worlds": {"a": {"x": 1, "y": {"z": 0.5}}, "b": {"x": 2}},'
        ' "meta": {"at": "2026-12-06T01:00:00+00:00", "host": "h", "python": "3.11"}}'
    )
    page = results.render(tmp_path)
    assert "| `hit` | 0.8271 |" in page
    assert "| `x` | 1 | 2 |" in page  # two entries: one column each
    assert "| `y.z` | 0.5000 | — |" in page  # a figure one world lacks shows as a dash
    assert "2026-12-06 01:00 UTC" in page
