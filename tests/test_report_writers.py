"""The writers on hand-made sections: the template escapes what runs put in it, Markdown keeps its tables whole."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pandas as pd

from bench.report.sections import Section
from bench.report.writers import TEMPLATE, html_page, markdown_page, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def _sections() -> list[Section]:
    table = pd.DataFrame({"arm": ["full <b>", "frozen"], "verdict": ["win", "loss"]})
    return [
        Section("Verdict: <script>", intro="a & b", bullets=["x < y", "it's \"quoted\""], table=table,
                row_class=lambda row: row["verdict"]),
        Section("Empty", intro="nothing here", table=table.iloc[0:0], notes=["a note"]),
    ]


def test_html_escapes_everything_from_the_data() -> None:
    page = html_page("T <i>", "sub & title", [("warn", "1 <run> failed")], _sections(), {})
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    assert "<title>T &lt;i&gt;</title>" in page
    assert '<div class="banner warn">1 &lt;run&gt; failed</div>' in page
    assert '<h2 id="verdict---script">Verdict: &lt;script&gt;</h2>' in page
    assert '<a href="#verdict---script">' in page
    assert '<tr class="win"><td>full &lt;b&gt;</td><td>win</td></tr>' in page
    assert "<li>it&#39;s &#34;quoted&#34;</li>" in page
    assert page.count("<table>") == 1  # an empty table is left out
    assert '<p class="notes">a note</p>' in page
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>")


def test_html_and_markdown_carry_the_same_words() -> None:
    sections = _sections()
    page = html_page("T", "S", [], sections, {})
    markdown = markdown_page("T", "S", [], sections)
    assert re.findall(r"^## (.*)$", markdown, re.M) == ["Verdict: <script>", "Empty"]
    for section in sections:
        assert section.intro in markdown
    assert "- x < y" in markdown and "x &lt; y" in page


def test_markdown_table_escapes_pipes() -> None:
    text = markdown_table(pd.DataFrame({"a|b": ["x|y"], "c": ["line\nbreak"]}))
    assert text.splitlines()[0] == r"| a\|b | c |"
    assert text.splitlines()[2] == r"| x\|y | line break |"


def test_template_ships_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["bench.report"]
    template = Path("templates") / TEMPLATE
    assert (ROOT / "bench" / "report" / template).is_file()
    assert any(fnmatch.fnmatch(template.as_posix(), pattern) for pattern in patterns)
