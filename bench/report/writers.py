"""The report's sections written out: one self-contained HTML page from a Jinja2 template, and Markdown.

The HTML embeds every figure as a base64 PNG and carries its own CSS, so it opens offline
from a mail attachment or a laptop with no network. The Markdown links the PNG files beside it.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from pathlib import Path

import jinja2
import pandas as pd

from bench.report.sections import Section

TEMPLATE = "index.html.j2"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # Autoescape: every string on the page comes from run data (names, errors, suite descriptions).
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"), autoescape=True,
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )


def _anchor(heading: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in heading.lower()).strip("-")


def _html_table(section: Section) -> dict | None:
    table = section.table
    if table is None or table.empty:
        return None
    # iterrows, as the page has always shown each row's values after pandas' per-row upcast.
    rows = [
        (section.row_class(row) if section.row_class else None, [str(v) for v in row])
        for _, row in table.iterrows()
    ]
    return {"columns": [str(c) for c in table.columns], "rows": rows}


def html_page(
    title: str, subtitle: str, banners: list[tuple[str, str]], sections: list[Section], pngs: dict[str, bytes]
) -> str:
    """The report as one HTML page; ``pngs`` holds each figure's PNG bytes by plot name."""
    shown = []
    for section in sections:
        figure = None
        if section.plot is not None:
            figure = {
                "data": base64.b64encode(pngs[section.plot.name]).decode("ascii"),
                "title": section.plot.title, "caption": section.plot.caption,
            }
        shown.append({
            "anchor": _anchor(section.heading), "heading": section.heading, "intro": section.intro,
            "bullets": section.bullets, "figure": figure, "table": _html_table(section), "notes": section.notes,
        })
    template = _environment().get_template(TEMPLATE)
    return template.render(title=title, subtitle=subtitle, banners=banners, sections=shown)


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a frame's values as strings."""
    lines = [
        "| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
        "| " + " | ".join("---" for _ in table.columns) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def markdown_page(title: str, subtitle: str, banners: list[tuple[str, str]], sections: list[Section]) -> str:
    """The report as Markdown, with figures linked from ``plots/``."""
    parts = [f"# {title}", "", subtitle, ""]
    for kind, text in banners:
        label = {"partial": "PARTIAL", "fitted": "FITTED TO THE TIME LIMIT"}.get(kind, "WARNING")
        parts += [f"> **{label}:** {text}", ""]
    for section in sections:
        parts += [f"## {section.heading}", ""]
        if section.intro and section.plot is None:
            parts += [section.intro, ""]
        if section.bullets:
            parts += [f"- {b}" for b in section.bullets] + [""]
        if section.plot is not None:
            parts += [f"![{section.plot.title}](plots/{section.plot.name}.png)", "", f"*{section.plot.caption}*", ""]
        if section.table is not None and not section.table.empty:
            parts += [markdown_table(section.table), ""]
        for note in section.notes:
            parts += [f"*{note}*", ""]
    return "\n".join(parts)


def write_text(path: Path, text: str) -> None:
    """Write beside and rename, so a browser never shows a half-written page."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
