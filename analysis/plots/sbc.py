"""Rank histograms of simulation-based calibration (Talts et al. 2018, Fig. 3).

:func:`sbc_rank_figure` draws one panel per model and parameter: the counts of the SBC ranks in
equal bins, the expected count of a uniform histogram, and the band that holds the count of one
bin with 99% probability under uniformity (binomial(N, 1/B) quantiles 0.005 and 0.995, N the
replications of the panel, B the bins). About one bin in a hundred lies outside the band by
chance; a U shape means the posterior is too narrow, a hump too wide, a slope biased.

The figure is a :class:`matplotlib.figure.Figure` built without pyplot; it is neither saved nor
shown. Artists carry a ``gid``: axes ``"sbc_<model>_<parameter>"``, ``"rank_counts"``,
``"uniform_band"``, ``"uniform_expected"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

#: Probability of the band of one bin's count under uniform ranks.
BAND_LEVEL = 0.99
#: Panels per row.
N_COLUMNS = 5


def uniform_band(n: int, n_bins: int, level: float = BAND_LEVEL) -> tuple[float, float]:
    """Central ``level`` interval of one bin's count when ``n`` ranks fall uniformly into ``n_bins`` bins."""
    tail = (1.0 - level) / 2.0
    dist = stats.binom(n, 1.0 / n_bins)
    return float(dist.ppf(tail)), float(dist.ppf(1.0 - tail))


def sbc_rank_figure(
    ranks: pd.DataFrame,
    *,
    n_ranks: int,
    n_bins: int,
    p_values: Mapping[tuple[str, str], float] | None = None,
    threshold: float | None = None,
) -> Figure:
    """Rank histograms of SBC, one panel per model and parameter (rows of a model stay together).

    Parameters
    ----------
    ranks : pandas.DataFrame
        Columns ``model``, ``parameter`` and ``rank`` (empty for replications that failed to run,
        which are left out); one row per replication and parameter.
    n_ranks : int
        Number of possible rank values (``L + 1``); ``n_bins`` must divide it.
    n_bins : int
        Bins of each histogram.
    p_values : mapping, optional
        ``(model, parameter) -> p-value`` of the uniformity test, shown in the panel title.
    threshold : float, optional
        Per-test level; p-values below it are marked "FAIL".

    Returns
    -------
    matplotlib.figure.Figure
    """
    if n_ranks % n_bins:
        raise ValueError(f"{n_bins} bins do not divide {n_ranks} rank values evenly")
    done = ranks[ranks["rank"].notna()]
    panels = [(m, p) for m, g in done.groupby("model", sort=False) for p in g["parameter"].drop_duplicates()]
    rows_of = {m: -(-len([q for q in panels if q[0] == m]) // N_COLUMNS) for m, _ in panels}
    n_rows = max(1, sum(rows_of.values()))
    fig = Figure(figsize=(2.6 * N_COLUMNS, 2.0 * n_rows + 0.6), layout="constrained")
    fig.suptitle(f"SBC rank histograms ({n_bins} bins; grey: {BAND_LEVEL:.0%} band of a uniform histogram)")
    grid = fig.add_gridspec(n_rows, N_COLUMNS)
    row = 0
    for model in rows_of:
        params = [p for m, p in panels if m == model]
        for j, param in enumerate(params):
            ax = fig.add_subplot(grid[row + j // N_COLUMNS, j % N_COLUMNS], gid=f"sbc_{model}_{param}")
            values = done.loc[(done["model"] == model) & (done["parameter"] == param), "rank"].astype(int).to_numpy()
            _panel(ax, values, n_ranks, n_bins)
            ax.set_title(_title(model, param, values.size, p_values, threshold), fontsize=8)
        row += rows_of[model]
    return fig


def _panel(ax: Axes, values: np.ndarray, n_ranks: int, n_bins: int) -> None:
    width = n_ranks // n_bins
    counts = np.bincount(values // width, minlength=n_bins)
    lo, hi = uniform_band(values.size, n_bins)
    edges = np.arange(n_bins + 1) * width
    ax.stairs(counts, edges, fill=True, color="#0072B2", alpha=0.75, zorder=1, gid="rank_counts")
    ax.axhspan(lo, hi, color="0.5", alpha=0.25, lw=0, zorder=2, gid="uniform_band")
    ax.axhline(values.size / n_bins, color="0.25", lw=0.8, zorder=3, gid="uniform_expected")
    ax.set_xlim(0, n_ranks)
    ax.set_ylim(0, max(hi, counts.max(initial=0)) * 1.15 + 1)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("rank", fontsize=7)


def _title(
    model: str, param: str, n: int, p_values: Mapping[tuple[str, str], float] | None, threshold: float | None
) -> str:
    title = f"{model}: {param} (n = {n})"
    if p_values is None or (model, param) not in p_values:
        return title
    p = p_values[(model, param)]
    verdict = "" if threshold is None or p is None or not np.isfinite(p) else (" FAIL" if p < threshold else "")
    return f"{title}\np = {p:.3g}{verdict}" if p is not None else title
