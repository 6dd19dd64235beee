"""``report.html``: a self-contained HTML rendering of ``report.md`` (figures embedded as data URIs).

Only the Markdown subset that :mod:`analysis.report.markdown` writes is supported: headings, paragraphs,
bullet lists, tables, images, fenced code and block quotes (block quotes starting with
"**CONVERGENCE FAILURE" are shown as red alerts, "**SIMULATED" ones as an amber banner).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
_STYLE = (
    """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;"""
    """max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.88em}"""
    """th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;height:auto;display:block;margin:1em 0;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.82em}
.alert{background:#fde2e1;border-left:6px solid #c00;color:#900;padding:.6em 1em;font-weight:bold}
.banner{background:#fff3cd;border-left:6px solid #e0a800;padding:.6em 1em}
blockquote{margin:1em 0;padding:.5em 1em;border-left:4px solid #ccc}
"""
)


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _image(match: re.Match, folder: Path) -> str:
    src = match["src"]
    path = folder / src
    kinds = {".png": "image/png", ".svg": "image/svg+xml"}
    if path.suffix.lower() in kinds and path.is_file():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        src = f"data:{kinds[path.suffix.lower()]};base64,{data}"
    return f'<figure><img src="{src}" alt="{html.escape(match["alt"])}"></figure>'


def _table(rows: list[str]) -> str:
    cells = [
        [c.strip() for c in r.strip().strip("|").split("|")] for r in rows if not re.match(r"^\|[-|: ]+\|$", r.strip())
    ]
    head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _quote(lines: list[str]) -> str:
    text = " ".join(line.lstrip("> ").strip() for line in lines)
    kind = "alert" if "CONVERGENCE FAILURE" in text else "banner" if "SIMULATED" in text else ""
    return f'<blockquote class="{kind}">{_inline(text)}</blockquote>'


def _blocks(lines: list[str]) -> list[list[str]]:
    """Split Markdown lines into blocks (fenced code kept whole)."""
    blocks: list[list[str]] = []
    current: list[str] = []
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        if not line.strip() and not fenced:
            if current:
                blocks.append(current)
            current = []
        else:
            current.append(line)
    return blocks + ([current] if current else [])


def _render_block(block: list[str], folder: Path) -> str:
    first = block[0]
    if first.startswith("```"):
        return "<pre>" + html.escape("\n".join(block[1:-1])) + "</pre>"
    if first.startswith("#"):
        level = len(first) - len(first.lstrip("#"))
        return f"<h{level}>{_inline(first[level:].strip())}</h{level}>"
    if first.startswith(">"):
        return _quote(block)
    if first.startswith("|"):
        return _table(block)
    if first.startswith("- "):
        return "<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in block) + "</ul>"
    if (match := _IMAGE.match(first.strip())) and len(block) == 1:
        return _image(match, folder)
    return "<p>" + _inline(" ".join(block)) + "</p>"


def markdown_to_html(markdown: str, *, folder: Path, title: str) -> str:
    """Render report Markdown as a self-contained HTML page; PNG images under ``folder`` are embedded."""
    body = "\n".join(_render_block(b, folder) for b in _blocks(markdown.splitlines()))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
