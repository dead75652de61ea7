"""A report as a list of blocks, rendered twice: Markdown (figures linked) and self-contained HTML
(figures embedded as base64 PNG), so the two files always say the same thing."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    html_id: str | None = None
    # Per-row CSS class (HTML only), e.g. the verdict of a claims row.
    row_classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str
    name: str


Block = Heading | Paragraph | Bullets | Table | Figure

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr.reproduced td.verdict { background: #d8f0d8; }
tr.not-reproduced td.verdict { background: #f6d5d5; }
tr.inconclusive td.verdict { background: #f3ecd0; }
tr.indicative td.verdict, tr.not-applicable td.verdict { background: #e6e6e6; }
tr.sanity-check-passed td.verdict { background: #eef4ee; }
tr.sanity-check-failed td.verdict { background: #f6d5d5; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], out_dir: Path) -> str:
    """Markdown with figures linked relative to `out_dir`."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            lines.append("")
        else:
            rel = block.path.resolve().relative_to(out_dir.resolve())
            lines += [f"![{block.caption}]({rel.as_posix()})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML file with no outside references: styles inline, figures as data URIs."""
    esc = html.escape
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{esc(block.anchor)}"' if block.anchor else ""
            body.append(f"<h{block.level}{anchor}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            table_id = f' id="{esc(block.html_id)}"' if block.html_id else ""
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            rows = []
            classes = block.row_classes or ("",) * len(block.rows)
            for row, css in zip(block.rows, classes, strict=True):
                cells = "".join(
                    f'<td class="{esc(h.lower())}">{esc(c)}</td>'
                    for h, c in zip(block.header, row, strict=True)
                )
                row_class = f' class="{esc(css)}"' if css else ""
                rows.append(f"<tr{row_class}>{cells}</tr>")
            body.append(
                f"<table{table_id}><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>"
            )
        else:
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure id="fig-{esc(block.name)}"><img alt="{esc(block.caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{esc(block.caption)}'
                "</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
