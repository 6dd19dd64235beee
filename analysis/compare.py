"""Comparing posterior summaries side by side: models, priors, engines, and the frequentist estimates.

Every row is one fit of one outcome: its label, model, engine, priors, μ (mean and 95%
interval), τ (median and 95% interval) and P(benefit). The frequentist DerSimonian–Laird and
REML estimates (as the published analysis reported them) sit beside the Bayesian ones, with
their 95% Wald confidence intervals for μ (τ as a point estimate √τ̂²).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from analysis.frequentist import rma_uni
from analysis.results import MetaAnalysisResult
from models.exact import exact_posterior
from models.priors import PriorSpec

COMPARE_COLUMNS = ["label", "outcome", "model", "engine", "priors", "k", "mu_mean", "mu_lower", "mu_upper",
                   "interval", "tau", "tau_lower", "tau_upper", "prob_benefit"]


def bayesian_row(label: str, fit: Mapping) -> dict:
    """A comparison row from a fit's JSON dict (``MetaAnalysisResult.to_dict()`` or compatible)."""
    mu, tau = fit["mu"], fit["tau"]
    priors = fit.get("priors", {})
    return {"label": label, "outcome": fit.get("outcome"), "model": fit.get("model"), "engine": fit.get("engine"),
            "priors": ", ".join(f"{k} ~ {v}" for k, v in sorted(priors.items())), "k": fit.get("k"),
            "mu_mean": mu["mean"], "mu_lower": mu["q025"], "mu_upper": mu["q975"], "interval": "eti95",
            "tau": tau["median"], "tau_lower": tau["q025"], "tau_upper": tau["q975"],
            "prob_benefit": fit.get("prob_benefit")}


def frequentist_rows(yi: np.ndarray, vi: np.ndarray, *, outcome: str) -> list[dict]:
    """DerSimonian–Laird and REML rows (metafor ``rma``), μ with its 95% Wald CI.

    With a single study τ² is not estimable, so no frequentist rows are returned.
    """
    rows: list[dict] = []
    if len(yi) < 2:
        return rows
    for method in ("DL", "REML"):
        fit = rma_uni(yi, vi, method=method)
        rows.append({"label": f"frequentist {method}", "outcome": outcome, "model": "random-effects",
                     "engine": method, "priors": "", "k": int(len(yi)), "mu_mean": float(fit.beta[0]),
                     "mu_lower": float(fit.ci_lb[0]), "mu_upper": float(fit.ci_ub[0]), "interval": "ci95 (Wald)",
                     "tau": float(np.sqrt(fit.tau2)), "tau_lower": np.nan, "tau_upper": np.nan, "prob_benefit": np.nan})
    return rows


def compare_table(fits: Mapping[str, Mapping], *, frequentist: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """Side-by-side summaries of several fits of one outcome.

    Parameters
    ----------
    fits : mapping of str to dict
        Label -> fit JSON dict (as written by ``evmeta fit --json``).
    frequentist : tuple of arrays, optional
        ``(yi, vi)`` of the outcome, to add the DL and REML rows.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COMPARE_COLUMNS`, one row per fit.
    """
    rows = [bayesian_row(label, fit) for label, fit in fits.items()]
    if frequentist is not None:
        outcome = rows[0]["outcome"] if rows else None
        rows += frequentist_rows(*frequentist, outcome=outcome)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def compare_markdown(table: pd.DataFrame) -> str:
    """The comparison table as Markdown (numbers to 3 decimals)."""
    from analysis.report_md import markdown_table

    shown = table.copy()
    for col in ("mu_mean", "mu_lower", "mu_upper", "tau", "tau_lower", "tau_upper", "prob_benefit"):
        shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return markdown_table(shown)


def draws_tree(result: MetaAnalysisResult, *, n: int = 4000, seed: int = 1) -> xr.DataTree:
    """``n`` posterior draws of μ and τ as a one-chain DataTree (NUTS draws, or exact draws).

    All fits get the same shape so that ArviZ can stack them along a ``model`` dimension.
    NUTS draws are pooled over chains and, if there are more than ``n``, thinned evenly.
    """
    if result.posterior is not None:
        post = result.posterior.posterior
        mu, tau = post["mu"].to_numpy().ravel(), post["tau"].to_numpy().ravel()
        keep = np.linspace(0, mu.size - 1, min(n, mu.size)).round().astype(int)
        mu, tau = mu[keep], tau[keep]
    else:
        post = exact_posterior(result.studies["yi"], result.studies["vi"], tau_prior=PriorSpec.parse(result.priors["tau"]),
                               mu_prior=PriorSpec.parse(result.priors["mu"]))
        draws = post.sample(n, rng=np.random.default_rng(seed))
        mu, tau = draws["mu"], draws["tau"]
    return az.from_dict({"posterior": {"mu": mu[None, :], "tau": tau[None, :]}})


def compare_forest(results: Mapping[str, MetaAnalysisResult]) -> Figure:
    """ArviZ forest plot of μ and τ with a ``model`` dimension (one entry per labelled fit)."""
    n = min(4000, *(r.posterior.posterior.sizes["chain"] * r.posterior.posterior.sizes["draw"]
                    for r in results.values() if r.posterior is not None))
    trees = {label: draws_tree(r, n=n) for label, r in results.items()}
    pc = az.plot_forest(trees, var_names=["mu", "tau"], combined=True, ci_kind="eti", ci_probs=(0.5, 0.95),
                        backend="matplotlib")
    pc.add_legend("model")
    fig = pc.viz["figure"].item()
    outcome = next(iter(results.values())).outcome.id
    fig.suptitle(f"{outcome}: posterior of μ and τ by fit (50% and 95% ETI)")
    return fig


def fit_labels(results: Sequence[MetaAnalysisResult]) -> list[str]:
    """Default labels ``engine model [priors]`` that distinguish the given fits."""
    return [f"{r.engine} {r.model} (μ~{r.priors['mu']}, τ~{r.priors['tau']})" for r in results]


STANDARD_PRIORS = {
    "default priors": ("normal:0:3", "halfnormal:1"),
    "tau ~ halfcauchy:0.5": ("normal:0:3", "halfcauchy:0.5"),
    "vague priors": ("normal:0:10", "uniform:0:5"),
}


def standard_comparison(
    dataset: object, outcome: str, *, seed: int = 1, sampler: object | None = None, table: object | None = None,
) -> tuple[pd.DataFrame, dict[str, MetaAnalysisResult]]:
    """The standard side-by-side set for one outcome: NUTS and exact engines, alternative priors, the
    arm-level likelihood (arm-level datasets), DL and REML.

    Returns
    -------
    (pandas.DataFrame, dict)
        The comparison table and the Bayesian fits by label (for :func:`compare_forest`).
    """
    from analysis.fit import PriorSet, fit_random_effects

    fits: dict[str, MetaAnalysisResult] = {}
    fits["NUTS, default priors"] = fit_random_effects(dataset, outcome, engine="nuts", seed=seed, sampler=sampler, table=table)
    for label, (mu, tau) in STANDARD_PRIORS.items():
        priors = PriorSet(mu=PriorSpec.parse(mu), tau=PriorSpec.parse(tau))
        fits[f"exact, {label}"] = fit_random_effects(dataset, outcome, engine="exact", priors=priors, table=table)
    if getattr(dataset, "level", "") == "arms":
        from analysis.arm_level import fit_arm_level

        fits["NUTS, arm-level likelihood"] = fit_arm_level(dataset, outcome, seed=seed, sampler=sampler, table=table)
    studies = fits["NUTS, default priors"].studies
    frame = compare_table({k: v.to_dict() for k, v in fits.items()},
                          frequentist=(studies["yi"].to_numpy(), studies["vi"].to_numpy()))
    return frame, fits
