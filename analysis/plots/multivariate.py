"""Figures of a multivariate meta-analysis: the between-study correlation matrix and borrowing of strength.

:func:`correlation_heatmap` shows the posterior mean of R with the 95% ETI of every correlation
written in its cell; :func:`borrowing_plot` sets each outcome's pooled μ_k (95% ETI) from the
multivariate model beside the univariate fit, on the benefit scale, with the interval-width ratio.
Both return a :class:`matplotlib.figure.Figure` built without pyplot and never save or show it.

Artists that tests and the report look up carry a ``gid``: ``"heatmap"`` (the image),
``"cell_text"``, ``"univariate"``, ``"multivariate"``, ``"width_ratio"``, ``"simulated_marker"``.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.config import INTERVAL_KIND
from analysis.results.multivariate import MultivariateResult

COLORS: dict[str, str] = {"univariate": "#777777", "multivariate": "#0072B2", "simulated": "#C00000", "zero": "#BBBBBB"}
CMAP: str = "RdBu_r"


def correlation_heatmap(result: MultivariateResult) -> Figure:
    """Heatmap of the posterior mean between-study correlation matrix R.

    Parameters
    ----------
    result : MultivariateResult
        A multivariate fit.

    Returns
    -------
    matplotlib.figure.Figure
        K x K cells coloured by the posterior mean of R on [-1, 1]; each off-diagonal cell
        reads ``mean`` over ``[q025, q975]`` (95% ETI). The figure is neither saved nor shown.
    """
    ids = [o.id for o in result.outcomes]
    K = len(ids)
    fig = Figure(figsize=(1.6 * K + 2.2, 1.3 * K + 1.6), layout="constrained")
    ax = fig.add_subplot()
    matrix = result.R_mean.to_numpy().copy()
    np.fill_diagonal(matrix, np.nan)  # the unit diagonal would dominate the colour scale's attention
    cmap = colormaps[CMAP].with_extremes(bad="#E8E8E8")
    image = ax.imshow(matrix, cmap=cmap, vmin=-1.0, vmax=1.0, gid="heatmap")
    fig.colorbar(image, ax=ax, label="posterior mean correlation")
    for j, a in enumerate(ids):
        for m, b in enumerate(ids):
            if j == m:
                ax.text(m, j, "1", ha="center", va="center", fontsize=10, gid="cell_text")
                continue
            row = result.rho.loc[f"{a}~{b}" if j < m else f"{b}~{a}"]
            ax.text(
                m,
                j,
                f"{row['mean']:.2f}\n[{row['q025']:.2f}, {row['q975']:.2f}]",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if abs(row["mean"]) > 0.6 else "black",
                gid="cell_text",
            )
    ax.set_xticks(range(K), ids, rotation=30, ha="right")
    ax.set_yticks(range(K), ids)
    ax.set_title(
        f"{result.dataset}: between-study correlations R (k = {result.k})\n"
        f"cells: posterior mean [95% ETI, {INTERVAL_KIND}]; benefit scale; prior R ~ {result.priors['R']}",
        fontsize=9,
        loc="left",
    )
    _simulated(fig, ax, result)
    return fig


def borrowing_plot(result: MultivariateResult) -> Figure:
    """Pooled μ_k, univariate vs multivariate (95% ETI), one row per outcome, benefit-oriented.

    Parameters
    ----------
    result : MultivariateResult
        A multivariate fit (its ``univariate`` table holds the reference fits).

    Returns
    -------
    matplotlib.figure.Figure
        Per outcome, a grey line (univariate) above a blue line (multivariate) from q025 to
        q975 with the posterior mean marked; the right margin gives k and the width ratio
        (multivariate / univariate; < 1 means strength was borrowed from correlated outcomes).
    """
    ids = [o.id for o in result.outcomes]
    n = len(ids)
    fig = Figure(figsize=(7.5, 0.75 * n + 1.8), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n, dtype=float)
    for offset, name, table in ((-0.15, "univariate", result.univariate), (0.15, "multivariate", result.mu)):
        rows = table.loc[ids]
        ax.hlines(y + offset, rows["q025"], rows["q975"], color=COLORS[name], lw=2.2, gid=name)
        ax.plot(rows["mean"], y + offset, "o", color=COLORS[name], label=f"{name} μ (mean, 95% ETI)", gid=name)
    ax.axvline(0.0, color=COLORS["zero"], lw=1, zorder=0)
    ax.set_yticks(y, [o.id + (" †" if o.direction < 0 else "") for o in result.outcomes])
    ax.set_ylim(n - 0.5, -0.5)
    _ratio_column(ax, result, ids, y)
    ax.set_xlabel(f"pooled effect μ_k, benefit-oriented {result.measure} (right = benefit; † sign flipped)")
    ax.set_title(
        f"{result.dataset}: borrowing of strength across outcomes (k = {result.k} studies)\n"
        f"within-study: {result.within}",
        fontsize=9,
        loc="left",
    )
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    _simulated(fig, ax, result)
    return fig


def _ratio_column(ax: Axes, result: MultivariateResult, ids: list[str], y: np.ndarray) -> None:
    """k and the ETI width ratio per outcome, written at the right of the axes."""
    for yi, o in zip(y, ids, strict=True):
        row = result.borrowing.loc[o]
        ax.text(
            1.02,
            yi,
            f"k={int(row['k'])}  ratio {row['width_ratio']:.2f}",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=8,
            gid="width_ratio",
        )


def _simulated(fig: Figure, ax: Axes, result: MultivariateResult) -> None:
    """Red 'SIMULATED DATA' label and a faint watermark when the data are simulated."""
    if result.provenance != "simulated":
        return
    fig.suptitle(
        "SIMULATED DATA",
        color=COLORS["simulated"],
        fontweight="bold",
        fontsize=11,
        x=0.98,
        ha="right",
        gid="simulated_marker",
    )
    ax.text(
        0.5,
        0.5,
        "SIMULATED",
        transform=ax.transAxes,
        ha="center",
        va="center",
        rotation=25,
        fontsize=40,
        color=COLORS["simulated"],
        alpha=0.07,
        fontweight="bold",
        zorder=0,
        in_layout=False,
        gid="simulated_watermark",
    )
