"""Fitting the univariate random-effects model of one outcome, with NUTS or the exact engine.

Configuration (outcome, priors, sampler settings) is validated before any sampling starts;
NUTS fits go through the convergence-gated sampling of :mod:`analysis.fitting.sampling`.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import xarray as xr

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects
from analysis.dataset.load import Dataset
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import diagnose
from analysis.results.random_effects import MetaAnalysisResult
from analysis.results.summaries import prob_benefit_from_draws, summarize_draws
from models.exact.posterior import exact_posterior
from models.priors import PriorSet, default_priors
from models.random_effects import build_random_effects_model, draw_theta, draw_theta_new, i2_draws

ENGINES = ("nuts", "exact")
#: Separate random stream (after the sampler's) for the conditional draws of theta and theta_new.
_THETA_STREAM = 1


def fit_random_effects(
    dataset: Dataset,
    outcome: str,
    *,
    engine: str = "nuts",
    priors: PriorSet | None = None,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    progressbar: bool = False,
) -> MetaAnalysisResult:
    """Fit the Bayesian random-effects model to one outcome of a dataset.

    Parameters
    ----------
    dataset : Dataset
        A validated dataset (:func:`analysis.dataset.load.load_dataset`).
    outcome : str
        Outcome id declared in the dataset.
    engine : {"nuts", "exact"}
        NUTS (nutpie, on the PyMC model with θ integrated out) or the exact quadrature engine.
    priors : PriorSet, optional
        Priors of mu and tau (default :func:`models.priors.default_priors` of ``dataset.effect_measure``;
        SMD: N(0, 3²) and HalfNormal(1)).
    seed : int
        Seed of every random step (sampler, θ draws); the same seed gives the same numbers.
    sampler : SamplerSettings, optional
        NUTS settings (ignored by the exact engine).
    table : EffectTable, optional
        Precomputed effect table of the dataset (computed if omitted).
    progressbar : bool
        Show the sampler's progress display while sampling.

    Returns
    -------
    MetaAnalysisResult
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    priors = priors or default_priors(dataset.effect_measure)
    sampler = sampler or SamplerSettings()
    effects = outcome_effects(dataset, table or compute_effects(dataset), outcome)
    base = {
        "dataset": dataset.name,
        "provenance": dataset.provenance,
        "outcome": dataset.outcomes[outcome],
        "model": "random-effects",
        "priors": priors.to_dict(),
        "measure": dataset.effect_measure,
    }
    if engine == "exact":
        return _fit_exact(effects, priors, base)
    return _fit_nuts(effects, priors, seed, sampler, progressbar, base)


def _fit_exact(effects: pd.DataFrame, priors: PriorSet, base: dict) -> MetaAnalysisResult:
    post = exact_posterior(
        effects["yi"], effects["vi"], tau_prior=priors.tau, mu_prior=priors.mu, study=list(effects["study"])
    )
    shrink = post.shrinkage()
    studies = study_table(
        effects,
        shrink["mean"].to_numpy(),
        shrink["sd"].to_numpy(),
        shrink["q025"].to_numpy(),
        shrink["q975"].to_numpy(),
    )
    p_up = post.prob_greater("mu", 0.0)
    direction = base["outcome"].direction
    return MetaAnalysisResult(
        **base,
        engine="exact",
        summaries={p: post.summary(p) for p in ("mu", "tau", "theta_new", "I2")},
        prob_benefit=p_up if direction > 0 else 1.0 - p_up,
        studies=studies,
        settings={"tau_nodes": int(post.tau_grid.size)},
    )


def study_table_from_draws(effects: pd.DataFrame, theta: np.ndarray) -> pd.DataFrame:
    """:func:`study_table` from draws of ``theta`` with shape ``(chain, draw, study)``."""
    return study_table(
        effects,
        theta.mean(axis=(0, 1)),
        theta.std(axis=(0, 1), ddof=1),
        np.quantile(theta, 0.025, axis=(0, 1)),
        np.quantile(theta, 0.975, axis=(0, 1)),
    )


def study_table(
    effects: pd.DataFrame, mean: np.ndarray, sd: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> pd.DataFrame:
    """Study rows of a fit: ``study, yi, vi`` of the study effects and the posterior of each ``theta_i``."""
    return pd.DataFrame(
        {
            "study": effects["study"].to_numpy(),
            "yi": effects["yi"].to_numpy(),
            "vi": effects["vi"].to_numpy(),
            "theta_mean": mean,
            "theta_sd": sd,
            "theta_q025": lo,
            "theta_q975": hi,
        }
    )


def _fit_nuts(
    effects: pd.DataFrame, priors: PriorSet, seed: int, sampler: SamplerSettings, progressbar: bool, base: dict
) -> MetaAnalysisResult:
    yi, vi = effects["yi"].to_numpy(dtype=float), effects["vi"].to_numpy(dtype=float)
    model = build_random_effects_model(
        yi, vi, study=list(effects["study"]), tau_prior=priors.tau, beta_priors=[priors.mu]
    )
    idata, used, retried = sample_with_retry(model, ["mu", "tau"], seed=seed, sampler=sampler, progressbar=progressbar)
    diagnostics = diagnose(idata, ["mu", "tau"])
    _add_study_draws(idata, yi, vi, list(effects["study"]), seed)
    post = idata.posterior
    theta = post["theta"].to_numpy()
    studies = study_table_from_draws(effects, theta)
    summaries = {p: summarize_draws(post[p].to_numpy()) for p in ("mu", "tau", "theta_new", "I2")}
    return MetaAnalysisResult(
        **base,
        engine="nuts",
        summaries=summaries,
        prob_benefit=prob_benefit_from_draws(post["mu"].to_numpy(), base["outcome"].direction),
        studies=studies,
        diagnostics=diagnostics,
        retried=retried,
        posterior=idata,
        settings={"seed": seed, **asdict(used)},
        pymc_model=model,
    )


def _add_study_draws(idata: xr.DataTree, yi: np.ndarray, vi: np.ndarray, study: list[str], seed: int) -> None:
    """Add θ (exact conditional), θ_new (seeded stream) and I² draws to the posterior group."""
    rng = np.random.default_rng([seed, _THETA_STREAM])
    post = idata.posterior
    mu, tau = post["mu"].to_numpy(), post["tau"].to_numpy()
    theta = draw_theta(yi, vi, mu[..., None], tau, rng=rng)
    idata["posterior/theta"] = xr.DataArray(theta, dims=("chain", "draw", "study"), coords={"study": study})
    idata["posterior/theta_new"] = xr.DataArray(draw_theta_new(mu, tau, rng=rng), dims=("chain", "draw"))
    idata["posterior/I2"] = xr.DataArray(i2_draws(tau, vi), dims=("chain", "draw"))
