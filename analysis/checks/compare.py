"""Comparing posterior summaries side by side: models, priors, engines, and the frequentist estimates.

Every row is one fit of one outcome: its label, model, engine, priors, μ (mean and 95%
interval), τ (median and 95% interval) and P(benefit). The frequentist DerSimonian–Laird and
REML estimates (as the published analysis reported them) sit beside the Bayesian ones, with
their 95% Wald confidence intervals for μ (τ as a point estimate √τ̂²).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.dataset.effects import EffectTable
from analysis.dataset.load import Dataset
from analysis.fitting.arm_level import fit_arm_level
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.results.random_effects import MetaAnalysisResult
from models.frequentist import rma_uni
from models.priors import PriorSet, PriorSpec

COMPARE_COLUMNS = [
    "label",
    "outcome",
    "model",
    "engine",
    "priors",
    "k",
    "mu_mean",
    "mu_lower",
    "mu_upper",
    "interval",
    "tau",
    "tau_lower",
    "tau_upper",
    "prob_benefit",
]


def bayesian_row(label: str, fit: Mapping) -> dict:
    """A comparison row from a fit's JSON dict (``MetaAnalysisResult.to_dict()`` or compatible)."""
    mu, tau = fit["mu"], fit["tau"]
    priors = fit.get("priors", {})
    return {
        "label": label,
        "outcome": fit.get("outcome"),
        "model": fit.get("model"),
        "engine": fit.get("engine"),
        "priors": ", ".join(f"{k} ~ {v}" for k, v in sorted(priors.items())),
        "k": fit.get("k"),
        "mu_mean": mu["mean"],
        "mu_lower": mu["q025"],
        "mu_upper": mu["q975"],
        "interval": "eti95",
        "tau": tau["median"],
        "tau_lower": tau["q025"],
        "tau_upper": tau["q975"],
        "prob_benefit": fit.get("prob_benefit"),
    }


def frequentist_rows(yi: np.ndarray, vi: np.ndarray, *, outcome: str) -> list[dict]:
    """DerSimonian–Laird and REML rows (metafor ``rma``), μ with its 95% Wald CI.

    With a single study τ² is not estimable, so no frequentist rows are returned.
    """
    rows: list[dict] = []
    if len(yi) < 2:
        return rows
    for method in ("DL", "REML"):
        fit = rma_uni(yi, vi, method=method)
        rows.append(
            {
                "label": f"frequentist {method}",
                "outcome": outcome,
                "model": "random-effects",
                "engine": method,
                "priors": "",
                "k": int(len(yi)),
                "mu_mean": float(fit.beta[0]),
                "mu_lower": float(fit.ci_lb[0]),
                "mu_upper": float(fit.ci_ub[0]),
                "interval": "ci95 (Wald)",
                "tau": float(np.sqrt(fit.tau2)),
                "tau_lower": np.nan,
                "tau_upper": np.nan,
                "prob_benefit": np.nan,
            }
        )
    return rows


def compare_table(
    fits: Mapping[str, Mapping], *, frequentist: tuple[np.ndarray, np.ndarray] | None = None
) -> pd.DataFrame:
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


def fit_labels(results: Sequence[MetaAnalysisResult]) -> list[str]:
    """Default labels ``engine model [priors]`` that distinguish the given fits."""
    return [f"{r.engine} {r.model} (μ~{r.priors['mu']}, τ~{r.priors['tau']})" for r in results]


STANDARD_PRIORS = {
    "default priors": ("normal:0:3", "halfnormal:1"),
    "tau ~ halfcauchy:0.5": ("normal:0:3", "halfcauchy:0.5"),
    "vague priors": ("normal:0:10", "uniform:0:5"),
}
#: The standard priors per effect measure: for ROM and NMD the SMD set on the scale of the measure's
#: defaults (:func:`models.priors.default_priors`; rescaled as :data:`analysis.checks.sensitivity.PRIOR_GRIDS`).
MEASURE_STANDARD_PRIORS = {
    "SMD": STANDARD_PRIORS,
    "ROM": {
        "default priors": ("normal:0:1", "halfnormal:0.5"),
        "tau ~ halfcauchy:0.25": ("normal:0:1", "halfcauchy:0.25"),
        "vague priors": ("normal:0:3", "uniform:0:2.5"),
    },
    "NMD": {
        "default priors": ("normal:0:100", "halfnormal:50"),
        "tau ~ halfcauchy:25": ("normal:0:100", "halfcauchy:25"),
        "vague priors": ("normal:0:300", "uniform:0:250"),
    },
}


def standard_comparison(
    dataset: Dataset,
    outcome: str,
    *,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
) -> tuple[pd.DataFrame, dict[str, MetaAnalysisResult]]:
    """The standard side-by-side set for one outcome: NUTS and exact engines, alternative priors, the
    arm-level likelihood (arm-level SMD datasets), DL and REML.

    Returns
    -------
    (pandas.DataFrame, dict)
        The comparison table and the Bayesian fits by label (for :func:`analysis.plots.compare.compare_forest`).
    """
    fits: dict[str, MetaAnalysisResult] = {}
    fits["NUTS, default priors"] = fit_random_effects(
        dataset, outcome, engine="nuts", seed=seed, sampler=sampler, table=table
    )
    for label, (mu, tau) in MEASURE_STANDARD_PRIORS.get(dataset.effect_measure, STANDARD_PRIORS).items():
        priors = PriorSet(mu=PriorSpec.parse(mu), tau=PriorSpec.parse(tau))
        fits[f"exact, {label}"] = fit_random_effects(dataset, outcome, engine="exact", priors=priors, table=table)
    if dataset.level == "arms" and dataset.effect_measure == "SMD":  # the arm-level likelihood models SMDs
        fits["NUTS, arm-level likelihood"] = fit_arm_level(dataset, outcome, seed=seed, sampler=sampler, table=table)
    studies = fits["NUTS, default priors"].studies
    frame = compare_table(
        {k: v.to_dict() for k, v in fits.items()}, frequentist=(studies["yi"].to_numpy(), studies["vi"].to_numpy())
    )
    return frame, fits
