"""Figures of the Bayesian checks: PPC (ArviZ + test statistics), power-scaling, prior grid.

Figures are returned, never saved. ArviZ-plots draws with pyplot; the report closes them.
"""

from __future__ import annotations

import arviz as az
import numpy as np
from arviz_plots import PlotCollection
from matplotlib.figure import Figure

from analysis.checks.predictive import cochran_q, egger_slope, max_standardised_residual
from analysis.results.predictive import PPCResult
from analysis.results.random_effects import MetaAnalysisResult

STAT_LABELS = {
    "Q": "Cochran's Q",
    "max_std_residual": "largest standardised residual",
    "egger_slope": "Egger-type slope (y on SE)",
}


def figure_of(plot_collection: PlotCollection) -> Figure:
    return plot_collection.viz["figure"].item()


def ppc_density_plot(result: MetaAnalysisResult) -> Figure:
    """ArviZ ``plot_ppc_dist``: replicated study effects against the observed ones (run the PPC first)."""
    if result.posterior is None or "posterior_predictive" not in result.posterior.children:
        raise ValueError("run analysis.checks.predictive.posterior_predictive_check on the fit first")
    fig = figure_of(az.plot_ppc_dist(result.posterior, backend="matplotlib", num_samples=100))
    fig.suptitle(
        f"{result.outcome.id}: posterior predictive check (replicated vs observed effects; {result.likelihood_label})"
    )
    return fig


def ppc_statistics_plot(result: MetaAnalysisResult, check: PPCResult) -> Figure:
    """Histograms of each test statistic on replicated data, observed value marked, with its p-value."""
    post = result.posterior.posterior
    mu, tau = post["mu"].to_numpy().ravel(), post["tau"].to_numpy().ravel()
    yi, vi = result.studies["yi"].to_numpy(dtype=float), result.studies["vi"].to_numpy(dtype=float)
    y_rep = check.y_rep.reshape(-1, yi.size)
    replicated = {
        "Q": lambda: cochran_q(y_rep, vi),
        "max_std_residual": lambda: max_standardised_residual(y_rep, vi, mu, tau),
        "egger_slope": lambda: egger_slope(y_rep, vi),
    }
    observed = {
        "Q": lambda: np.full(1, cochran_q(yi, vi)),
        "max_std_residual": lambda: max_standardised_residual(yi, vi, mu, tau),
        "egger_slope": lambda: np.full(1, egger_slope(yi, vi)),
    }
    names = [n for n in STAT_LABELS if n in check.statistics]
    fig = Figure(figsize=(3.7 * len(names), 3.4), layout="constrained")
    for ax, name in zip(np.atleast_1d(fig.subplots(1, len(names))), names, strict=True):
        ax.hist(replicated[name](), bins=50, color="#9ecae1", edgecolor="white")
        ax.axvline(float(np.median(observed[name]())), color="black", lw=2, label="observed")
        stat = check.statistics[name]
        p_text = f"ppp = {stat['ppp']:.3f}" + (
            f" (two-sided {stat['ppp_two_sided']:.3f})" if "ppp_two_sided" in stat else ""
        )
        ax.set_title(f"{STAT_LABELS[name]}\n{p_text}", fontsize=10)
        ax.set_yticks([])
    fig.suptitle(
        f"{result.outcome.id}: test statistics on replicated data (black: observed; {result.likelihood_label})"
    )
    return fig
