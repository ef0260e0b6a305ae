"""``docs/CONFIG.md``, generated from :class:`core.settings.Settings`: one row per field.

The table is never edited by hand: ``make docs`` writes it and a unit test fails when it is
stale, so a new setting cannot land undocumented. Sections follow the ``# Section`` comments
that group the fields in ``core/settings.py``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from core.settings import REPO_ROOT, Settings

CONFIG_MD = REPO_ROOT / "docs" / "CONFIG.md"
_SECTION = re.compile(r"^    # (.+)$")
_FIELD = re.compile(r"^    ([a-z_][a-z0-9_]*): ")


def sections() -> dict[str, str]:
    """Each field's section: the last ``# Section`` comment above it in the class body."""
    out: dict[str, str] = {}
    current = "General"
    for line in inspect.getsource(Settings).splitlines():
        if m := _SECTION.match(line):
            current = m.group(1)
        elif (m := _FIELD.match(line)) and m.group(1) in Settings.model_fields:
            out[m.group(1)] = current
    return out


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            return f"`<repo>/{value.relative_to(REPO_ROOT)}`"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, list | tuple):
        return f"`{','.join(str(v) for v in value)}`" if value else "empty"
    if isinstance(value, dict):
        return "`" + ",".join(f"{k}={v}" for k, v in value.items()) + "`"
    return f"`{value}`"


def _bounds(field: FieldInfo) -> str:
    """Numeric bounds from the field's constraints, or the choices of a ``Literal``."""
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(f"`{c}`" for c in get_args(field.annotation))
    parts = []
    for meta in field.metadata:
        for kind, attr, sign in (
            (Ge, "ge", "≥"),
            (Gt, "gt", ">"),
            (Le, "le", "≤"),
            (Lt, "lt", "<"),
        ):
            if isinstance(meta, kind):
                parts.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole Markdown page."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from core/settings.py by `make docs` (core/settings_doc.py); do not edit."
        " -->",
        "",
        "Every setting is an environment variable `FEEDCAST_<NAME>` (a `.env` file is not read);"
        " `feedcast config` prints the effective values. Bounds are checked when `Settings()`"
        " is built, so a bad value fails the command that reads it, naming the variable.",
        "",
    ]
    where = sections()
    section = None
    names = list(Settings.model_fields)
    for i, (name, field) in enumerate(Settings.model_fields.items()):
        if where.get(name, "General") != section:
            section = where.get(name, "General")
            lines += [
                f"## {section}",
                "",
                "| variable | default | bounds | meaning |",
                "|---|---|---|---|",
            ]
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        lines.append(
            f"| `FEEDCAST_{name.upper()}` | {_cell(_default(default))} | {_bounds(field)} "
            f"| {_cell(field.description or '')} |"
        )
        if i + 1 == len(names) or where.get(names[i + 1], "General") != section:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    CONFIG_MD.parent.mkdir(exist_ok=True)
    CONFIG_MD.write_text(render())
    print(f"wrote {CONFIG_MD.relative_to(REPO_ROOT)} ({len(Settings.model_fields)} settings)")
