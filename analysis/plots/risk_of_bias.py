"""SYRCLE risk-of-bias summary figure (robvis style): traffic-light table and domain summary bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.plots.labels import display_label

#: More studies than this: the per-study traffic lights are left out of the figure.
MAX_TRAFFIC_ROWS = 40

ROB_COLOURS = {"low": "#1a9641", "unclear": "#fdae61", "high": "#d7191c"}
ROB_SYMBOLS = {"low": "+", "unclear": "?", "high": "−"}


def rob_columns(studies: pd.DataFrame) -> list[str]:
    """The ``rob_<domain>`` columns of a studies table, in file order."""
    return [c for c in studies.columns if c.startswith("rob_")]


def _domain_label(column: str) -> str:
    return column.removeprefix("rob_").replace("_", " ")


def rob_summary_plot(studies: pd.DataFrame, *, simulated: bool = False, max_rows: int = MAX_TRAFFIC_ROWS) -> Figure:
    """SYRCLE risk-of-bias figure: judgement per study and domain, and the share per domain.

    Parameters
    ----------
    studies : pandas.DataFrame
        The dataset's studies table with ``rob_<domain>`` columns (low / unclear / high).
    simulated : bool
        Mark the figure as showing simulated data.
    max_rows : int
        With more studies than this the per-study traffic lights are left out (they are in
        ``studies.csv``) and only the share per domain is drawn.

    Raises
    ------
    ValueError
        If the table has no risk-of-bias columns.
    """
    cols = rob_columns(studies)
    if not cols:
        raise ValueError("the studies table has no rob_<domain> columns")
    k = len(studies)
    if k > max_rows:
        fig = Figure(figsize=(max(9.0, 0.55 * len(cols) + 6), 0.3 * len(cols) + 2.5), layout="constrained")
        _domain_bars(fig.subplots(), studies, cols)
    else:
        fig = Figure(figsize=(max(9.0, 0.55 * len(cols) + 6), 0.32 * k + 0.3 * len(cols) + 3), layout="constrained")
        ax_light, ax_bar = fig.subplots(2, 1, height_ratios=[max(k, 3), max(len(cols), 3) * 0.8])
        _traffic_lights(ax_light, studies, cols)
        _domain_bars(ax_bar, studies, cols)
    handles = [Patch(color=c, label=f"{j} risk of bias") for j, c in ROB_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    title = "SYRCLE risk of bias" + (f" ({k} studies: share per domain)" if k > max_rows else "")
    fig.suptitle(title + ("  [SIMULATED DATA]" if simulated else ""), color="black")
    return fig


def _traffic_lights(ax: Axes, studies: pd.DataFrame, cols: list[str]) -> None:
    for i, (_, row) in enumerate(studies.iterrows()):
        for j, col in enumerate(cols):
            value = str(row[col]).lower()
            ax.scatter(j, i, s=220, color=ROB_COLOURS.get(value, "grey"), edgecolor="white")
            ax.text(
                j, i, ROB_SYMBOLS.get(value, ""), ha="center", va="center", color="white", fontsize=9, fontweight="bold"
            )
    ax.set_xticks(
        range(len(cols)), [_domain_label(c) for c in cols], rotation=35, ha="left", rotation_mode="anchor", fontsize=8
    )
    ax.set_yticks(range(len(studies)), [display_label(s, 40) for s in studies["study"]], fontsize=8)
    ax.set_xlim(-0.6, len(cols) - 0.4)
    ax.set_ylim(len(studies) - 0.5, -0.5)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _domain_bars(ax: Axes, studies: pd.DataFrame, cols: list[str]) -> None:
    shares = (
        pd.DataFrame({c: studies[c].str.lower().value_counts(normalize=True) for c in cols})
        .T.reindex(columns=list(ROB_COLOURS))
        .fillna(0)
    )
    left = np.zeros(len(cols))
    ypos = np.arange(len(cols))
    for judgement, colour in ROB_COLOURS.items():
        ax.barh(ypos, 100 * shares[judgement], left=left, color=colour, edgecolor="white")
        left += 100 * shares[judgement].to_numpy()
    ax.set_yticks(ypos, [_domain_label(c) for c in cols], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of studies")
