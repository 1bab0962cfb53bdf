"""One report, two renderings: `report.md` (PNGs and CSVs beside it) and a self-contained `report.html`.

A report is a list of blocks (headings, paragraphs, banners, tables, figures); both writers render
the same list, so the two files always say the same thing. The HTML embeds every PNG as a base64
data URI and carries no script, so it opens anywhere, offline, as one file.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from harness.report.tables import Table


@dataclass(frozen=True)
class Heading:
    """A section heading (level 1-3)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Plain text; `backticks` mark code."""

    text: str


@dataclass(frozen=True)
class Banner:
    """A warning the reader must not miss (synthetic weights, projected figures, failed cases)."""

    text: str


@dataclass(frozen=True)
class TableBlock:
    """A table, with a link to its CSV."""

    table: Table
    csv_name: str


@dataclass(frozen=True)
class FigureBlock:
    """A PNG plot and its caption."""

    path: Path
    caption: str


Block = Union[Heading, Paragraph, Banner, TableBlock, FigureBlock]


# ---------------------------------------------------------------- markdown
def _md_cell(text: str) -> str:
    """A table cell's text for markdown: `|` would end the cell, `*` (as in 832*480) start emphasis."""
    return text.replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A table in GitHub markdown."""
    headings, rows = table.display()
    lines = ["| " + " | ".join(_md_cell(h) for h in headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(table: Table) -> str:
    """A table as aligned plain text, for a terminal."""
    headings, rows = table.display()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headings)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headings, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def render_markdown(blocks: list[Block]) -> str:
    """The report as markdown; figures and CSVs are referenced by file name (they sit beside it)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Banner):
            out.append(f"> **Note:** {block.text}")
        elif isinstance(block, TableBlock):
            out.append(markdown_table(block.table) if block.table.records else "(no rows)")
            out.append("")  # a line right below a table would be read as one of its rows
            tail = f"{block.table.note} " if block.table.note else ""
            out.append(f"{tail}CSV: [{block.csv_name}]({block.csv_name})")
        elif isinstance(block, FigureBlock):
            out.append(f"![{block.caption}]({block.path.name})")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.banner { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.6em 1em; margin: 0.6em 0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .note { font-size: 0.85em; color: #555; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""

# A number, or a median with its range: `1.136 [1.097, 1.448]` (right-aligned like a number).
_NUMBER = re.compile(r"^[-+]?[0-9][0-9.,]*( \[[-+]?[0-9][0-9.]*, [-+]?[0-9][0-9.]*\])?$")


def _inline(text: str) -> str:
    """Escape text; `backticks` become <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def html_table(table: Table) -> str:
    """A table as HTML; numeric cells right-aligned."""
    headings, rows = table.display()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if _NUMBER.match(c) else f"<td>{html.escape(c)}</td>"
                        for c in row)
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table id="table-{table.name}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks: list[Block], title: str) -> str:
    """The report as one HTML file with the plots embedded."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Banner):
            out.append(f'<div class="banner"><strong>Note:</strong> {_inline(block.text)}</div>')
        elif isinstance(block, TableBlock):
            out.append(html_table(block.table) if block.table.records else "<p>(no rows)</p>")
            note = f"{_inline(block.table.note)} " if block.table.note else ""
            out.append(f'<p class="note">{note}CSV: <a href="{html.escape(block.csv_name)}">'
                       f"{html.escape(block.csv_name)}</a></p>")
        elif isinstance(block, FigureBlock):
            out.append(f'<figure><img src="{data_uri(block.path)}" alt="{html.escape(block.caption)}">'
                       f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)
