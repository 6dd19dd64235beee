"""Figures of the prior sensitivity analyses: ArviZ power-scaling and the prior grid.

Figures are returned, never saved.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.plots.predictive import figure_of
from analysis.results.random_effects import MetaAnalysisResult


def psense_plot(result: MetaAnalysisResult, top_level: tuple[str, ...] = ("mu", "tau")) -> Figure:
    """ArviZ ``plot_psense_dist`` for top-level parameters (after :func:`analysis.checks.sensitivity.power_scaling`)."""
    names = list(top_level)
    fig = figure_of(az.plot_psense_dist(result.posterior, var_names=names, prior_var_names=names, backend="matplotlib"))
    fig.suptitle(f"{result.outcome.id}: power-scaling of the priors of {', '.join(names)} ({result.likelihood_label})")
    return fig


def prior_grid_plot(grid: pd.DataFrame) -> Figure:
    """μ (mean, 95% ETI) and τ (median, 95% ETI) under each prior of the grid."""
    labels = [f"μ~{m}, τ~{t}" for m, t in zip(grid["prior_mu"], grid["prior_tau"], strict=True)]
    ypos = np.arange(len(grid))[::-1]
    fig = Figure(figsize=(10, 0.45 * len(grid) + 1.5), layout="constrained")
    ax_mu, ax_tau = fig.subplots(1, 2, sharey=True)
    ax_mu.errorbar(
        grid["mu_mean"],
        ypos,
        xerr=[grid["mu_mean"] - grid["mu_q025"], grid["mu_q975"] - grid["mu_mean"]],
        fmt="o",
        color="#08519c",
    )
    ax_tau.errorbar(
        grid["tau_median"],
        ypos,
        xerr=[grid["tau_median"] - grid["tau_q025"], grid["tau_q975"] - grid["tau_median"]],
        fmt="s",
        color="#a63603",
    )
    ax_mu.set_yticks(ypos, labels)
    ax_mu.axvline(0, color="grey", lw=0.8)
    ax_mu.set_xlabel("μ: mean and 95% ETI (eti95)")
    ax_tau.set_xlabel("τ: median and 95% ETI (eti95)")
    fig.suptitle(f"{grid['outcome'].iloc[0]}: posterior under alternative priors (exact engine, normal likelihood)")
    return fig
