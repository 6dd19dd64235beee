"""Figures of a multivariate meta-analysis: correlations, borrowing of strength, priors and reporting bias.

:func:`correlation_heatmap` shows the posterior mean of R with the 95% ETI of every correlation
written in its cell; :func:`borrowing_plot` sets each outcome's pooled μ_k (95% ETI) from the
multivariate model beside the univariate fit, on the benefit scale, with the interval-width ratio;
:func:`prior_posterior_plot` overlays prior density and posterior histogram of every correlation
parameter and ρ_w (what the data taught the model); :func:`reporting_bias_plot` shows, per outcome
with missing studies, the multivariate − univariate contrast against its spread under ignorable
missingness. All return a :class:`matplotlib.figure.Figure` built without pyplot and never save or
show it.

Artists that tests and the report look up carry a ``gid``: ``"heatmap"`` (the image),
``"cell_text"``, ``"univariate"``, ``"multivariate"``, ``"width_ratio"``, ``"simulated_marker"``,
``"prior"``, ``"posterior"``, ``"contrast"``, ``"null_band"``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from analysis.checks.reporting_bias import Z_FLAG
from analysis.config import INTERVAL_KIND
from analysis.results.multivariate import MultivariateResult

#: At most this many prior/posterior panels (the first pairs, then ρ_w); the table lists all.
MAX_PANELS = 12

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


def prior_posterior_plot(result: MultivariateResult) -> Figure:
    """Prior density against posterior histogram for every correlation parameter and ρ_w.

    Parameters
    ----------
    result : MultivariateResult
        A multivariate fit with ``prior_posterior`` and its posterior draws.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per parameter (at most :data:`MAX_PANELS`: the first pairs and ρ_w), the prior
        as a grey line, the posterior as a blue histogram, the contraction 1 - var_post/var_prior
        in the title. An independent-outcomes fit with a fixed ρ_w has no parameter: one panel
        saying so.
    """
    table = result.prior_posterior if result.prior_posterior is not None else None
    labels = [] if table is None else list(table.index)
    if len(labels) > MAX_PANELS:
        labels = labels[: MAX_PANELS - 1] + (["rho_within"] if "rho_within" in labels else [labels[MAX_PANELS - 1]])
    ncols = min(4, max(len(labels), 1))
    nrows = -(-max(len(labels), 1) // ncols)
    fig = Figure(figsize=(2.6 * ncols + 0.6, 2.2 * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    post = result.posterior.posterior if result.posterior is not None else None
    for ax, label in zip(axes, labels, strict=False):
        _prior_posterior_panel(ax, label, table.loc[label], post)
    for ax in axes[len(labels) :]:
        ax.set_axis_off()
    if not labels:
        axes[0].text(0.5, 0.5, "no correlation parameter\n(independent outcomes, ρ_w fixed)", ha="center", va="center")
    shown = "" if table is None or len(labels) == len(table) else f"; {len(labels)} of {len(table)} shown"
    fig.suptitle(
        f"{result.dataset}: prior (grey) against posterior (blue), structure {result.structure}{shown}",
        fontsize=9,
        x=0.01,
        ha="left",
    )
    _simulated(fig, axes[0], result)
    return fig


def _prior_posterior_panel(ax: Axes, label: str, row: pd.Series, post: xr.DataTree | None) -> None:
    prior = stats.beta(row["prior_a"], row["prior_b"], loc=row["prior_loc"], scale=row["prior_scale"])
    grid = np.linspace(row["prior_loc"], row["prior_loc"] + row["prior_scale"], 201)
    name, _, pair = label.partition("[")
    if post is not None and name in post:
        array = post[name].sel(pair=pair.rstrip("]")) if pair else post[name]
        ax.hist(
            array.to_numpy().ravel(),
            bins=40,
            range=(grid[0], grid[-1]),
            density=True,
            color=COLORS["multivariate"],
            alpha=0.55,
            gid="posterior",
        )
    ax.plot(grid, prior.pdf(grid), color=COLORS["univariate"], lw=1.6, gid="prior")
    ax.set_title(f"{label}\ncontraction {row['contraction']:.2f}", fontsize=8)
    ax.set_yticks([])
    ax.tick_params(labelsize=7)


def reporting_bias_plot(result: MultivariateResult) -> Figure:
    """Outcome-reporting-bias diagnostic: the multivariate − univariate contrast per outcome.

    Parameters
    ----------
    result : MultivariateResult
        A multivariate fit with ``reporting_bias`` rows.

    Returns
    -------
    matplotlib.figure.Figure
        Per outcome with missing studies, the posterior mean and 95% ETI of the contrast (blue;
        negative = the missing studies pull the pooled effect down) over a grey band of ±1.96 SD
        that the contrast has under ignorable missingness; the z statistic and whether it is
        flagged (z <= -1.96) at the right.
    """
    rb = result.reporting_bias
    rows = [] if rb is None else list(rb.itertuples())
    n = max(len(rows), 1)
    fig = Figure(figsize=(7.5, 0.7 * n + 1.8), layout="constrained")
    ax = fig.add_subplot()
    for y, r in enumerate(rows):
        half = abs(Z_FLAG) * r.null_sd
        ax.fill_betweenx([y - 0.3, y + 0.3], -half, half, color=COLORS["zero"], alpha=0.5, lw=0, gid="null_band")
        ax.hlines(y, r.q025, r.q975, color=COLORS["multivariate"], lw=2.2, gid="contrast")
        ax.plot(r.mean, y, "o", color=COLORS["multivariate"], gid="contrast")
        verdict = "flagged" if r.flagged else "not flagged"
        ax.text(
            1.02,
            y,
            f"k={r.k_reported}, {len(r.missing_studies)} missing; z {r.z:.2f} {verdict}",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=8,
        )
    if not rows:
        ax.text(0.5, 0.5, "every study reports every outcome: nothing to diagnose", ha="center", va="center")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r.outcome for r in rows])
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(
        f"multivariate − univariate pooled effect, benefit-oriented {result.measure} (negative: missing studies worse)"
    )
    ax.set_title(
        f"{result.dataset}: outcome-reporting bias diagnostic ({result.structure} structure)\n"
        "blue: contrast, mean and 95% ETI; grey: ±1.96 SD of the contrast if missingness were ignorable",
        fontsize=9,
        loc="left",
    )
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
