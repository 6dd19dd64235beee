"""Figures of the Bayesian checks: PPC (ArviZ + test statistics), power-scaling, prior grid.

Figures are returned, never saved. ArviZ-plots draws with pyplot; the report closes them.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.checks import PPCResult, cochran_q, egger_slope, max_standardised_residual
from analysis.results import MetaAnalysisResult

STAT_LABELS = {"Q": "Cochran's Q", "max_std_residual": "largest standardised residual", "egger_slope": "Egger-type slope (y on SE)"}


def _figure_of(plot_collection: object) -> Figure:
    return plot_collection.viz["figure"].item()


def ppc_density_plot(result: MetaAnalysisResult) -> Figure:
    """ArviZ ``plot_ppc_dist``: replicated study effects against the observed ones (run the PPC first)."""
    if result.posterior is None or "posterior_predictive" not in result.posterior.children:
        raise ValueError("run analysis.checks.posterior_predictive_check on the fit first")
    fig = _figure_of(az.plot_ppc_dist(result.posterior, backend="matplotlib", num_samples=100))
    fig.suptitle(f"{result.outcome.id}: posterior predictive check (replicated vs observed effects)")
    return fig


def ppc_statistics_plot(result: MetaAnalysisResult, check: PPCResult) -> Figure:
    """Histograms of each test statistic on replicated data, observed value marked, with its p-value."""
    post = result.posterior.posterior
    mu, tau = post["mu"].to_numpy().ravel(), post["tau"].to_numpy().ravel()
    yi, vi = result.studies["yi"].to_numpy(dtype=float), result.studies["vi"].to_numpy(dtype=float)
    y_rep = check.y_rep.reshape(-1, yi.size)
    replicated = {"Q": lambda: cochran_q(y_rep, vi), "max_std_residual": lambda: max_standardised_residual(y_rep, vi, mu, tau),
                  "egger_slope": lambda: egger_slope(y_rep, vi)}
    observed = {"Q": lambda: np.full(1, cochran_q(yi, vi)), "max_std_residual": lambda: max_standardised_residual(yi, vi, mu, tau),
                "egger_slope": lambda: np.full(1, egger_slope(yi, vi))}
    names = [n for n in STAT_LABELS if n in check.statistics]
    fig = Figure(figsize=(3.7 * len(names), 3.4), layout="constrained")
    for ax, name in zip(np.atleast_1d(fig.subplots(1, len(names))), names, strict=True):
        ax.hist(replicated[name](), bins=50, color="#9ecae1", edgecolor="white")
        ax.axvline(float(np.median(observed[name]())), color="black", lw=2, label="observed")
        stat = check.statistics[name]
        p_text = f"ppp = {stat['ppp']:.3f}" + (f" (two-sided {stat['ppp_two_sided']:.3f})" if "ppp_two_sided" in stat else "")
        ax.set_title(f"{STAT_LABELS[name]}\n{p_text}", fontsize=10)
        ax.set_yticks([])
    fig.suptitle(f"{result.outcome.id}: test statistics on replicated data (black: observed)")
    return fig


def psense_plot(result: MetaAnalysisResult, top_level: tuple[str, ...] = ("mu", "tau")) -> Figure:
    """ArviZ ``plot_psense_dist`` for the top-level parameters (run :func:`analysis.sensitivity.power_scaling` first)."""
    names = list(top_level)
    fig = _figure_of(az.plot_psense_dist(result.posterior, var_names=names, prior_var_names=names, backend="matplotlib"))
    fig.suptitle(f"{result.outcome.id}: power-scaling of the priors of {', '.join(names)}")
    return fig


def prior_grid_plot(grid: pd.DataFrame) -> Figure:
    """μ (mean, 95% ETI) and τ (median, 95% ETI) under each prior of the grid."""
    labels = [f"μ~{m}, τ~{t}" for m, t in zip(grid["prior_mu"], grid["prior_tau"], strict=True)]
    ypos = np.arange(len(grid))[::-1]
    fig = Figure(figsize=(10, 0.45 * len(grid) + 1.5), layout="constrained")
    ax_mu, ax_tau = fig.subplots(1, 2, sharey=True)
    ax_mu.errorbar(grid["mu_mean"], ypos, xerr=[grid["mu_mean"] - grid["mu_q025"], grid["mu_q975"] - grid["mu_mean"]], fmt="o", color="#08519c")
    ax_tau.errorbar(grid["tau_median"], ypos, xerr=[grid["tau_median"] - grid["tau_q025"], grid["tau_q975"] - grid["tau_median"]], fmt="s", color="#a63603")
    ax_mu.set_yticks(ypos, labels)
    ax_mu.axvline(0, color="grey", lw=0.8)
    ax_mu.set_xlabel("μ: mean and 95% ETI (eti95)")
    ax_tau.set_xlabel("τ: median and 95% ETI (eti95)")
    fig.suptitle(f"{grid['outcome'].iloc[0]}: posterior under alternative priors (exact engine)")
    return fig
