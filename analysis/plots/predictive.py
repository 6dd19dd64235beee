"""Figures of the Bayesian checks: PPC (ArviZ + test statistics), power-scaling, prior grid.

Figures are returned, never saved. ArviZ-plots draws with pyplot; the report closes them.
"""

from __future__ import annotations

import arviz as az
import numpy as np
from arviz_plots import PlotCollection
from matplotlib.figure import Figure

from analysis.checks.loo_pit import pit_tree
from analysis.results.predictive import LooPitResult, PPCResult
from analysis.results.random_effects import MetaAnalysisResult

STAT_LABELS = {
    "Q": "Cochran's Q",
    "max_std_residual": "largest standardised residual",
    "egger_slope": "Egger-type slope (y on SE)",
}


def figure_of(plot_collection: PlotCollection) -> Figure:
    return plot_collection.viz["figure"].item()


def ppc_density_plot(result: MetaAnalysisResult) -> Figure:
    """ArviZ ``plot_ppc_dist``: replicated effects against the observed ones (run the PPC first).

    Study effects ``y`` for the normal likelihood, comparisons' Hedges' g ``g`` for the arm-level one.
    """
    if result.posterior is None or "posterior_predictive" not in result.posterior.children:
        raise ValueError("run the posterior predictive check (analysis.checks.predictive*) on the fit first")
    var = "g" if "g" in result.posterior.posterior_predictive else "y"
    unit = "comparisons' g" if var == "g" else "study effects"
    fig = figure_of(az.plot_ppc_dist(result.posterior, var_names=[var], backend="matplotlib", num_samples=100))
    fig.suptitle(
        f"{result.outcome.id}: posterior predictive check (replicated vs observed {unit}; {result.likelihood_label})"
    )
    return fig


def ppc_statistics_plot(result: MetaAnalysisResult, check: PPCResult) -> Figure:
    """Histograms of each statistic on replicated data, observed value marked, with its ppp and sampled p.

    The ppp (averaged over draws) describes; the sampled posterior p-value is the calibrated check.
    """
    names = [n for n in STAT_LABELS if n in check.statistics]
    fig = Figure(figsize=(3.7 * len(names), 3.4), layout="constrained")
    for ax, name in zip(np.atleast_1d(fig.subplots(1, len(names))), names, strict=True):
        ax.hist(check.replicated[name], bins=50, color="#9ecae1", edgecolor="white")
        ax.axvline(float(np.median(check.observed[name])), color="black", lw=2, label="observed")
        stat = check.statistics[name]
        p_text = f"ppp = {stat['ppp']:.3f}" + (
            f" (two-sided {stat['ppp_two_sided']:.3f})" if "ppp_two_sided" in stat else ""
        )
        if name in check.sampled:
            p_text += f"; check p = {check.sampled[name]['p_value']:.3f}"
        ax.set_title(f"{STAT_LABELS[name]}\n{p_text}", fontsize=10)
        ax.set_yticks([])
    fig.suptitle(
        f"{result.outcome.id}: test statistics on replicated {check.unit} effects "
        f"(black: observed; {result.likelihood_label})"
    )
    return fig


def loo_pit_plot(result: MetaAnalysisResult, check: LooPitResult) -> Figure:
    """ArviZ ``plot_ecdf_pit`` of the studies' LOO-PIT values (Δ-ECDF: ECDF minus the uniform CDF)."""
    tree = pit_tree(check)
    pc = az.plot_ecdf_pit(
        tree,
        group="loo_pit",
        sample_dims=["study"],
        envelope_prob=0.95,
        backend="matplotlib",
        visuals={"p_value_text": False},  # its uniformity test is not calibrated for dependent LOO-PITs
    )
    fig = figure_of(pc)
    fig.set_size_inches(7.5, 3.6)
    fig.subplots_adjust(bottom=0.18, top=0.82)
    for ax in fig.axes:
        ax.set_title("")
        ax.set_xlabel("LOO-PIT of the study's mean g")
        ax.set_ylabel("ECDF − uniform")
    fig.suptitle(
        f"{result.outcome.id}: leave-one-study-out PIT of {check.k} studies ({result.likelihood_label})\n"
        f"most outlying {check.most_outlying} (two-sided p = {check.p_value.min():.3f}); a description, not a check",
        fontsize=9,
    )
    return fig
