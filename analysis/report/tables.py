"""Markdown tables and number formats shared by the report sections."""

from __future__ import annotations

import pandas as pd


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame (cells already formatted as text)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def interval(summary: dict[str, float], digits: int = 2) -> str:
    """``mean [q025, q975]`` with the given number of decimals."""
    return f"{summary['mean']:.{digits}f} [{summary['q025']:.{digits}f}, {summary['q975']:.{digits}f}]"


def compare_markdown(table: pd.DataFrame) -> str:
    """The comparison table as Markdown (numbers to 3 decimals)."""
    shown = table.copy()
    for col in ("mu_mean", "mu_lower", "mu_upper", "tau", "tau_lower", "tau_upper", "prob_benefit"):
        shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return markdown_table(shown)
