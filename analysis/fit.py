"""Fitting the univariate random-effects model of one outcome, with NUTS or the exact engine.

Configuration (outcome, priors, sampler settings) is validated before any sampling starts.
NUTS fits are checked against the convergence gates of :mod:`analysis.diagnostics`; a fit
that fails is retried once with ``target_accept=0.99`` and twice the tuning, and if it still
fails it is returned marked as failed (never silently).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from analysis.dataset import Dataset
from analysis.diagnostics import diagnose
from analysis.effects import EffectTable, compute_effects, study_effects
from analysis.nuts import sample_nuts
from analysis.results import MetaAnalysisResult
from analysis.summaries import prob_benefit_from_draws, summarize_draws
from models.exact import exact_posterior
from models.priors import DEFAULT_MU_PRIOR, DEFAULT_TAU_PRIOR, PriorSpec
from models.random_effects import build_random_effects_model, draw_theta, draw_theta_new, i2_draws

ENGINES = ("nuts", "exact")
#: Separate random stream (after the sampler's) for the conditional draws of theta and theta_new.
_THETA_STREAM = 1


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings; the defaults give 4 x 1000 draws, enough for ESS >= 400 on these models.

    ``target_accept`` defaults to 0.95 (brms users raise ``adapt_delta`` likewise for small k):
    with few studies the curvature of the marginal posterior changes quickly as tau -> 0, and
    at 0.8-0.9 a few divergences appear there (seen on k = 4-6 outcomes of the default data).
    """

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    target_accept: float = 0.95

    def __post_init__(self) -> None:
        if min(self.draws, self.tune, self.chains) < 1 or not 0.5 <= self.target_accept < 1.0:
            raise ValueError(f"invalid sampler settings {self}")


@dataclass(frozen=True)
class PriorSet:
    """Priors of the univariate model: ``mu`` (normal) and ``tau`` (on [0, inf))."""

    mu: PriorSpec = DEFAULT_MU_PRIOR
    tau: PriorSpec = DEFAULT_TAU_PRIOR

    def __post_init__(self) -> None:
        if self.mu.family != "normal":
            raise ValueError(f"the prior of mu must be normal:M:S, got {self.mu}")
        self.tau.require_positive("tau")

    def to_dict(self) -> dict[str, str]:
        """Prior strings by parameter name."""
        return {"mu": str(self.mu), "tau": str(self.tau)}


def outcome_effects(dataset: Dataset, table: EffectTable, outcome: str) -> pd.DataFrame:
    """One effect per study for ``outcome`` (see :func:`analysis.effects.study_effects`).

    Raises
    ------
    ValueError
        If the outcome is not declared in the dataset or no study reports it.
    """
    if outcome not in dataset.outcomes:
        raise ValueError(f"outcome {outcome!r} is not declared in {dataset.name}; declared: {', '.join(dataset.outcomes)}")
    effects = study_effects(table, outcome)
    if effects.empty:
        raise ValueError(f"no study of {dataset.name} reports outcome {outcome!r}")
    return effects


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
        A validated dataset (:func:`analysis.dataset.load_dataset`).
    outcome : str
        Outcome id declared in the dataset.
    engine : {"nuts", "exact"}
        NUTS (nutpie, on the PyMC model with θ integrated out) or the exact quadrature engine.
    priors : PriorSet, optional
        Priors of mu and tau (default N(0, 3²) and HalfNormal(1)).
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
    priors = priors or PriorSet()
    sampler = sampler or SamplerSettings()
    effects = outcome_effects(dataset, table or compute_effects(dataset), outcome)
    base = {"dataset": dataset.name, "provenance": dataset.provenance, "outcome": dataset.outcomes[outcome],
            "model": "random-effects", "priors": priors.to_dict(), "measure": dataset.effect_measure}
    if engine == "exact":
        return _fit_exact(effects, priors, base)
    return _fit_nuts(effects, priors, seed, sampler, progressbar, base)


def _fit_exact(effects: pd.DataFrame, priors: PriorSet, base: dict) -> MetaAnalysisResult:
    post = exact_posterior(effects["yi"], effects["vi"], tau_prior=priors.tau, mu_prior=priors.mu, study=list(effects["study"]))
    shrink = post.shrinkage()
    studies = _study_table(effects, shrink["mean"].to_numpy(), shrink["sd"].to_numpy(), shrink["q025"].to_numpy(), shrink["q975"].to_numpy())
    p_up = post.prob_greater("mu", 0.0)
    direction = base["outcome"].direction
    return MetaAnalysisResult(
        **base, engine="exact", summaries={p: post.summary(p) for p in ("mu", "tau", "theta_new", "I2")},
        prob_benefit=p_up if direction > 0 else 1.0 - p_up, studies=studies,
        settings={"tau_nodes": int(post.tau_grid.size)},
    )


def _study_table(effects: pd.DataFrame, mean: np.ndarray, sd: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "study": effects["study"].to_numpy(), "yi": effects["yi"].to_numpy(), "vi": effects["vi"].to_numpy(),
        "theta_mean": mean, "theta_sd": sd, "theta_q025": lo, "theta_q975": hi,
    })


def sample_model(model: pm.Model, *, seed: int, sampler: SamplerSettings, progressbar: bool) -> xr.DataTree:
    """Run NUTS on ``model`` with nutpie (chains in sequence on one core) and return the DataTree.

    The compiled model is reused for later models of the same structure (:mod:`analysis.nuts`).
    """
    return sample_nuts(model, draws=sampler.draws, tune=sampler.tune, chains=sampler.chains,
                       target_accept=sampler.target_accept, seed=seed, progressbar=progressbar)


def sample_with_retry(
    model: pm.Model, var_names: list[str], *, seed: int, sampler: SamplerSettings, progressbar: bool
) -> tuple[xr.DataTree, SamplerSettings, bool]:
    """Sample; if a convergence gate fails, retry once with target_accept 0.99 and doubled tuning and draws."""
    idata = sample_model(model, seed=seed, sampler=sampler, progressbar=progressbar)
    if diagnose(idata, var_names).passed:
        return idata, sampler, False
    careful = replace(sampler, target_accept=max(sampler.target_accept, 0.99), tune=2 * sampler.tune, draws=2 * sampler.draws)
    return sample_model(model, seed=seed, sampler=careful, progressbar=progressbar), careful, True


def _fit_nuts(
    effects: pd.DataFrame, priors: PriorSet, seed: int, sampler: SamplerSettings, progressbar: bool, base: dict
) -> MetaAnalysisResult:
    yi, vi = effects["yi"].to_numpy(dtype=float), effects["vi"].to_numpy(dtype=float)
    model = build_random_effects_model(yi, vi, study=list(effects["study"]), tau_prior=priors.tau, beta_priors=[priors.mu])
    idata, used, retried = sample_with_retry(model, ["mu", "tau"], seed=seed, sampler=sampler, progressbar=progressbar)
    diagnostics = diagnose(idata, ["mu", "tau"])
    _add_study_draws(idata, yi, vi, list(effects["study"]), seed)
    post = idata.posterior
    theta = post["theta"].to_numpy()
    studies = _study_table(effects, theta.mean(axis=(0, 1)), theta.std(axis=(0, 1), ddof=1),
                           np.quantile(theta, 0.025, axis=(0, 1)), np.quantile(theta, 0.975, axis=(0, 1)))
    summaries = {p: summarize_draws(post[p].to_numpy()) for p in ("mu", "tau", "theta_new", "I2")}
    return MetaAnalysisResult(
        **base, engine="nuts", summaries=summaries,
        prob_benefit=prob_benefit_from_draws(post["mu"].to_numpy(), base["outcome"].direction),
        studies=studies, diagnostics=diagnostics, retried=retried, posterior=idata,
        settings={"seed": seed, **asdict(used)}, pymc_model=model,
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
