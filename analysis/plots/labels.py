"""Text from the data (study ids, levels, outcome labels) made drawable by the figure font.

Ids in a dataset may hold any printable text; matplotlib's default font (DejaVu Sans) has no glyph
for control characters, private-use code points or most CJK ideographs, draws an empty box for
them and warns. :func:`display_label` replaces each such character with ``?`` (the tables and
JSON keep the original id) and shortens long labels with an ellipsis.
"""

from __future__ import annotations

import unicodedata
from functools import cache

import matplotlib
from matplotlib.font_manager import FontProperties, findfont, get_font

REPLACEMENT = "?"


@cache
def _charmap(family: str) -> frozenset[int]:
    """Code points that the font matplotlib uses for ``family`` has a glyph for."""
    return frozenset(get_font(findfont(FontProperties(family=[family]))).get_charmap())


def display_label(text: str, max_chars: int | None = None) -> str:
    """``text`` with characters the figure font cannot draw replaced by ``?``, shortened to ``max_chars``.

    Parameters
    ----------
    text : str
        A label from the data.
    max_chars : int, optional
        Longer labels are cut and end in ``…``.
    """
    glyphs = _charmap(matplotlib.rcParams["font.family"][0])
    shown = "".join(c if ord(c) in glyphs and unicodedata.category(c)[0] != "C" else REPLACEMENT for c in str(text))
    if max_chars is not None and len(shown) > max_chars:
        shown = shown[: max_chars - 1].rstrip() + "…"
    return shown
