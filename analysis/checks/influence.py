r"""Influence of each study (replaces the frequentist leave-one-out; DESIGN.md §4).

For the random-effects model of one outcome (θ integrated out,
:math:`y_i \sim \mathcal N(\mu, v_i + \tau^2)`):

* **PSIS-LOO** per study with its Pareto :math:`\hat k` (ArviZ 1.x ``loo(pointwise=True)``).
  The ``log_likelihood`` group is computed by ``pymc.compute_log_likelihood`` from the
  marginal model, so the pointwise term is :math:`\log \mathcal N(y_i; \mu, v_i + \tau^2)`
  (the predictive density of a *new study's* estimate, not of :math:`y_i` given its own
  :math:`\theta_i`). Draws come from NUTS (``engine="nuts"``) or, exactly and in well under a
  second, from the exact posterior (``engine="exact"``: independent draws, relative efficiency 1).
* **Exact leave-one-study-out refits** for every study (:func:`models.exact.posterior.exact_posterior`,
  milliseconds each): how the posterior of :math:`\mu` and :math:`\tau` (mean, median, 95% ETI)
  moves when the study is dropped, and the exact LOO predictive density
  :math:`\log p(y_i \mid y_{-i}) = \log p(y) - \log p(y_{-i})` (difference of the exact
  marginal likelihoods), against which the PSIS estimate is checked — where :math:`\hat k > 0.7`
  the PSIS value is unreliable and the exact one is the answer.
* The frequentist ``leave1out`` (REML, metafor) beside it, for readers of the original paper.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects
from analysis.dataset.load import Dataset, Outcome
from analysis.dataset.problems import NotApplicable
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import Diagnostics, diagnose
from analysis.results.influence import PARETO_K_THRESHOLD, InfluenceResult
from models.exact.posterior import ExactPosterior, exact_posterior
from models.frequentist import leave1out, rma_uni
from models.priors import PriorSet, default_priors
from models.random_effects import build_random_effects_model

__all__ = ["ENGINES", "PARETO_K_THRESHOLD", "InfluenceResult", "influence_analysis", "study_influence"]

ENGINES = ("nuts", "exact")
#: Fewest studies for leave-one-out: each refit keeps at least two.
MIN_STUDIES = 3
#: Exact posterior draws for ``engine="exact"`` (4 pseudo-chains of 1000 independent draws).
EXACT_CHAINS, EXACT_DRAWS = 4, 1000
_SUMMARY_KEYS = ("mean", "median", "q025", "q975")


def _exact(yi: np.ndarray, vi: np.ndarray, priors: PriorSet) -> ExactPosterior:
    return exact_posterior(yi, vi, tau_prior=priors.tau, mu_prior=priors.mu)


def exact_leave_one_out(yi: np.ndarray, vi: np.ndarray, study: list[str], priors: PriorSet) -> pd.DataFrame:
    """Exact posterior of mu and tau with each study left out, and the exact LOO log predictive density.

    Returns
    -------
    pandas.DataFrame
        Index ``study``; columns ``mu_{mean,median,q025,q975}``, ``tau_{...}`` and ``elpd_exact``
        (``log p(y_i | y_-i)``).
    """
    full = _exact(yi, vi, priors)
    rows = []
    for i in range(yi.size):
        keep = np.arange(yi.size) != i
        post = _exact(yi[keep], vi[keep], priors)
        row = {f"{p}_{key}": post.summary(p)[key] for p in ("mu", "tau") for key in _SUMMARY_KEYS}
        row["elpd_exact"] = full.log_marginal_likelihood - post.log_marginal_likelihood
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(study, name="study"))


def _exact_draws_tree(post: ExactPosterior, seed: int) -> xr.DataTree:
    """Independent exact posterior draws of mu and tau shaped as a (chain, draw) posterior group."""
    draws = post.sample(EXACT_CHAINS * EXACT_DRAWS, rng=np.random.default_rng([seed, 3]))
    shape = (EXACT_CHAINS, EXACT_DRAWS)
    coords = {"chain": np.arange(EXACT_CHAINS), "draw": np.arange(EXACT_DRAWS)}
    ds = xr.Dataset({p: (("chain", "draw"), draws[p].reshape(shape)) for p in ("mu", "tau")}, coords=coords)
    return xr.DataTree.from_dict({"posterior": ds})


def psis_loo(posterior: xr.DataTree, model: pm.Model) -> tuple[az.ELPDData, xr.DataTree]:
    """PSIS-LOO of the marginal random-effects model from posterior draws.

    Parameters
    ----------
    posterior : xarray.DataTree
        Tree with a ``posterior`` group holding ``mu`` and ``tau`` (extra variables are ignored);
        it is not modified.
    model : pymc.Model
        The marginal model (:func:`models.random_effects.build_random_effects_model`) whose
        observed ``y`` defines the pointwise log-likelihood.

    Returns
    -------
    elpd : arviz_stats ELPDData
        ``az.loo(..., pointwise=True)``: ``elpd_i`` and ``pareto_k`` per study.
    tree : xarray.DataTree
        ``posterior`` (``mu``, ``tau``) + ``log_likelihood`` groups used.
    """
    post = posterior["posterior"].to_dataset()[["mu", "tau"]]
    tree = xr.DataTree.from_dict({"posterior": post})
    log_lik = pm.compute_log_likelihood(tree, model=model, extend_inferencedata=False, progressbar=False)
    tree["log_likelihood"] = xr.DataTree(log_lik)
    with warnings.catch_warnings():
        # High Pareto k is reported per study (and answered by the exact refits), not warned about.
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        return az.loo(tree, pointwise=True, var_name="y"), tree


def _draws(
    yi: np.ndarray,
    vi: np.ndarray,
    model: pm.Model,
    priors: PriorSet,
    engine: str,
    seed: int,
    sampler: SamplerSettings,
    posterior: xr.DataTree | None,
    progressbar: bool,
) -> tuple[xr.DataTree, Diagnostics | None, bool]:
    if engine == "exact":
        return _exact_draws_tree(_exact(yi, vi, priors), seed), None, False
    if posterior is None:
        posterior, _, retried = sample_with_retry(
            model, ["mu", "tau"], seed=seed, sampler=sampler, progressbar=progressbar
        )
        return posterior, diagnose(posterior, ["mu", "tau"]), retried
    return posterior, diagnose(posterior, ["mu", "tau"]), False


def study_influence(
    effects: pd.DataFrame,
    *,
    outcome: Outcome,
    priors: PriorSet | None = None,
    engine: str = "nuts",
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    posterior: xr.DataTree | None = None,
    dataset: str = "",
    provenance: str = "",
    measure: str = "SMD",
    progressbar: bool = False,
) -> InfluenceResult:
    """Influence analysis of one outcome from one effect per study.

    Parameters
    ----------
    effects : pandas.DataFrame
        Columns ``study, yi, vi`` (at least 3 studies).
    outcome : Outcome
        The outcome (labels and direction for the report).
    priors : PriorSet, optional
        Priors of mu (normal) and tau (default :func:`models.priors.default_priors` of ``measure``;
        SMD: N(0, 3²), HalfNormal(1)).
    engine : {"nuts", "exact"}
        Source of the posterior draws for PSIS-LOO (the refits are always exact).
    seed : int
        Seed of the NUTS run or of the exact draws.
    sampler : SamplerSettings, optional
        NUTS settings.
    posterior : xarray.DataTree, optional
        Existing NUTS draws of this model (e.g. ``MetaAnalysisResult.posterior``), reused
        instead of sampling again (``engine="nuts"`` only).
    dataset, provenance, measure : str
        Labels for the report.
    progressbar : bool
        Show the sampler's progress display.

    Returns
    -------
    InfluenceResult
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if posterior is not None and engine != "nuts":
        raise ValueError("a precomputed posterior is only used with engine='nuts'")
    if not {"study", "yi", "vi"} <= set(effects.columns):
        raise ValueError("influence analysis needs an effects table with columns study, yi and vi")
    if len(effects) < MIN_STUDIES:
        raise NotApplicable(
            f"influence analysis needs at least {MIN_STUDIES} studies (leaving one out must leave two), "
            f"k = {len(effects)}"
        )
    priors, sampler = priors or default_priors(measure), sampler or SamplerSettings()
    yi, vi = effects["yi"].to_numpy(dtype=float), effects["vi"].to_numpy(dtype=float)
    study = [str(s) for s in effects["study"]]
    model = build_random_effects_model(yi, vi, study=study, tau_prior=priors.tau, beta_priors=[priors.mu])
    draws, diagnostics, retried = _draws(yi, vi, model, priors, engine, seed, sampler, posterior, progressbar)
    elpd, _ = psis_loo(draws, model)
    table = exact_leave_one_out(yi, vi, study, priors)
    table.insert(0, "vi", vi)
    table.insert(0, "yi", yi)
    table.insert(2, "pareto_k", elpd.pareto_k.to_numpy())
    table.insert(3, "elpd_psis", elpd.elpd_i.to_numpy())
    full = _exact(yi, vi, priors)
    for p in ("mu", "tau"):
        table[f"{p}_shift"] = table[f"{p}_mean"] - full.mean(p)
    freq = leave1out(yi, vi, study=study, method="REML")[["estimate", "se", "ci_lb", "ci_ub", "tau2"]]
    table = table.join(freq.add_prefix("freq_"))
    return InfluenceResult(
        dataset=dataset,
        provenance=provenance,
        outcome=outcome,
        measure=measure,
        priors=priors.to_dict(),
        engine=engine,
        table=table,
        full={p: full.summary(p) for p in ("mu", "tau")},
        frequentist=rma_uni(yi, vi, method="REML"),
        elpd_loo=float(elpd.elpd),
        elpd_loo_se=float(elpd.se),
        p_loo=float(elpd.p),
        good_k=float(elpd.good_k),
        diagnostics=diagnostics,
        retried=retried,
        settings={"seed": seed, "n_draws": int(elpd.n_samples)},
    )


def influence_analysis(
    dataset: Dataset,
    outcome: str,
    *,
    priors: PriorSet | None = None,
    engine: str = "nuts",
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    posterior: xr.DataTree | None = None,
    progressbar: bool = False,
) -> InfluenceResult:
    """Influence analysis of one outcome of a dataset (the ``evmeta influence`` command).

    Parameters are those of :func:`study_influence`, with the dataset and outcome id in place of
    the effects table (``table``: a precomputed :class:`~analysis.dataset.effects.EffectTable`).

    Returns
    -------
    InfluenceResult
    """
    effects = outcome_effects(dataset, table or compute_effects(dataset), outcome)
    return study_influence(
        effects,
        outcome=dataset.outcomes[outcome],
        priors=priors,
        engine=engine,
        seed=seed,
        sampler=sampler,
        posterior=posterior,
        dataset=dataset.name,
        provenance=dataset.provenance,
        measure=dataset.effect_measure,
        progressbar=progressbar,
    )
