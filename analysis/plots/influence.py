"""Influence plot: μ without each study (exact refits) and PSIS-LOO Pareto k per study.

Left panel, one row per left-out study: the posterior mean of μ with its 95% ETI from the exact
refit without that study (circle and line) and metafor's REML ``leave1out`` estimate with its
95% CI (hollow diamond, thin line, just below), against the full-data posterior mean (vertical
line) and 95% ETI (shaded band). Right panel: the Pareto k of each study's PSIS-LOO estimate
with the 0.7 reliability threshold (studies above it are drawn in red; their exact refit is the
answer). Built without pyplot; the figure is neither saved nor shown. ``gid``s: axes
``"influence_mu"`` / ``"pareto_k"``, ``"loo_mu"``, ``"loo_mu_eti"``, ``"freq_leave1out"``,
``"full_mu"``, ``"full_mu_eti"``, ``"pareto_k_points"``, ``"k_threshold"``, ``"simulated_marker"``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.plots.forest import COLORS, MAX_LABEL_CHARS, MEASURE_LABELS, ROW_INCH
from analysis.plots.labels import display_label
from analysis.results.influence import PARETO_K_THRESHOLD, InfluenceResult, influential_rows

_FREQ_OFFSET = 0.25


def _mu_panel(ax: Axes, result: InfluenceResult, y: np.ndarray) -> None:
    t, full = result.table, result.full["mu"]
    ax.axvspan(
        full["q025"], full["q975"], color="#DDDDDD", alpha=0.7, lw=0, gid="full_mu_eti", label="full data: 95% ETI of μ"
    )
    ax.axvline(full["mean"], color=COLORS["pooled"], lw=1.2, gid="full_mu", label="full data: posterior mean μ")
    ax.hlines(y, t["mu_q025"], t["mu_q975"], color=COLORS["shrunken"], lw=1.4, gid="loo_mu_eti")
    ax.scatter(
        t["mu_mean"],
        y,
        color=COLORS["shrunken"],
        s=24,
        zorder=4,
        gid="loo_mu",
        label="without the study: posterior mean, 95% ETI (exact)",
    )
    yf = y + _FREQ_OFFSET
    ax.hlines(yf, t["freq_ci_lb"], t["freq_ci_ub"], color=COLORS["observed"], lw=0.7, alpha=0.7)
    ax.scatter(
        t["freq_estimate"],
        yf,
        marker="D",
        s=16,
        facecolors="none",
        edgecolors=COLORS["observed"],
        zorder=4,
        gid="freq_leave1out",
        label="without the study: REML estimate, 95% CI (metafor)",
    )
    ax.set_xlabel(f"μ without the study ({MEASURE_LABELS.get(result.measure, result.measure)})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7, frameon=False)


def _k_panel(ax: Axes, result: InfluenceResult, y: np.ndarray) -> None:
    k = result.table["pareto_k"].to_numpy(dtype=float)
    colours = np.where(k > PARETO_K_THRESHOLD, COLORS["simulated"], COLORS["observed"])
    ax.scatter(k, y, c=colours, s=24, zorder=4, gid="pareto_k_points")
    ax.axvline(
        PARETO_K_THRESHOLD,
        color=COLORS["simulated"],
        ls="--",
        lw=1.0,
        gid="k_threshold",
        label=f"k = {PARETO_K_THRESHOLD}",
    )
    ax.set_xlim(min(-0.2, float(np.min(k)) - 0.05), max(1.05, float(np.max(k)) + 0.1))
    ax.set_xlabel("Pareto k (PSIS-LOO)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7, frameon=False)
    ax.tick_params(labelleft=False)


def influence_plot(result: InfluenceResult, max_rows: int | None = None) -> Figure:
    """Leave-one-study-out μ (exact refits and REML) and Pareto k per study.

    Parameters
    ----------
    result : InfluenceResult
        Output of :func:`analysis.checks.influence.study_influence`.
    max_rows : int, optional
        Draw only the studies whose removal shifts mu most (for large k).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels sharing the study rows (first study at the top).
    """
    total, shown = result.k, influential_rows(result, max_rows)
    if len(shown) < total:
        result = dataclasses.replace(result, table=shown)
    k = len(shown)
    y = np.arange(k, dtype=float)
    fig = Figure(figsize=(10.0, 2.4 + ROW_INCH * 1.4 * k), layout="constrained")
    ax, kax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1.3]})
    ax.set_gid("influence_mu")
    kax.set_gid("pareto_k")
    _mu_panel(ax, result, y)
    _k_panel(kax, result, y)
    ax.set_yticks(y, [display_label(s, MAX_LABEL_CHARS) for s in result.table.index])
    ax.set_ylim(k - 0.4, -0.6)
    ax.set_ylabel("study left out")
    for axis in (ax, kax):
        axis.grid(True, axis="x", color=COLORS["grid"], lw=0.4, alpha=0.5)
    fig.suptitle(
        f"Influence: {result.dataset} / {display_label(result.outcome.label)} (k = {total}"
        + (f"; the {k} studies whose removal shifts μ most" if k < total else "")
        + "; "
        f"priors mu ~ {result.priors['mu']}, tau ~ {result.priors['tau']}; normal likelihood)",
        fontsize=10,
    )
    if result.provenance == "simulated":
        kax.set_title(
            "SIMULATED DATA",
            loc="right",
            color=COLORS["simulated"],
            fontweight="bold",
            fontsize=11,
            gid="simulated_marker",
        )
    return fig
