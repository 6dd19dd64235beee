"""Bayesian small-study-effect and publication-bias analysis of one outcome (replaces Egger's test; DESIGN.md §4).

1. The bias-averaged ensemble (:mod:`analysis.fitting.bias_averaged`): model averaging over
   effect, heterogeneity and bias (none, monotone selection on one-sided p-values, PET, PEESE).
   Its model-averaged mu is the adjusted estimate and its inclusion Bayes factor for bias the
   evidence for publication bias; the selection models are reported as single models from it.
2. PET and PEESE single meta-regressions (exact engine by default, NUTS on request): on
   ``sqrt(1/n~)`` and ``1/n~`` for an SMD with group sizes (the SE of an SMD grows with the effect,
   which fakes asymmetry; Zwetsloot et al. 2017), on the SE and ``vi`` for measures whose SE does
   not depend on the effect, and not at all for an SMD without group sizes.
3. For reference, metafor's Egger test (:func:`models.frequentist.regtest`).

There is no conditional PET-PEESE estimate: the project's power study measured it at a mean error
of -0.64 SMD on outcomes without selection (README, "Publication bias"). Configuration is
validated before anything is fitted.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects
from analysis.dataset.load import Dataset, Outcome
from analysis.dataset.problems import NotApplicable
from analysis.fitting.bias_averaged import bias_data, fit_bias_averaged_effects, one_sided_p
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import diagnose
from analysis.results.small_study import RegressionFit, SmallStudyResult
from analysis.results.summaries import summarize_draws
from models.exact.posterior import exact_posterior
from models.frequentist import regtest
from models.priors import PriorSet, default_priors
from models.random_effects import build_random_effects_model
from models.selection import CUTPOINT_SETS, interval_index, interval_labels
from models.small_study import PREDICTORS, predictor_values, small_study_design

__all__ = ["fit_small_study", "fit_small_study_effects"]

ENGINES = ("exact", "nuts")
#: Cut-points of the p-value intervals shown per study (the first selection model's).
DISPLAY_CUTPOINTS = CUTPOINT_SETS[0]
#: Number of exact posterior draws kept for plots (funnel lines and predictive region).
N_DRAWS = 4000
#: PET/PEESE regressions and the selection model need at least this many studies.
MIN_STUDIES = 3
#: Fewer studies than this: small-study methods have very low power (Sterne et al. 2011, BMJ 343:d4002).
MIN_K_ADVISED = 10
#: A predictor whose largest/smallest value is below this ratio barely varies across studies.
SPREAD_RATIO_MIN = 1.5


def _study_table(effects: pd.DataFrame, direction: int, measure: str) -> pd.DataFrame:
    out = effects[["study", "yi", "vi"]].copy().reset_index(drop=True)
    out["study"] = out["study"].astype(str)
    out["sei"] = np.sqrt(out["vi"].to_numpy(dtype=float))
    for col in ("n_treatment", "n_control"):
        values = effects[col].to_numpy(dtype=float) if col in effects else np.full(len(out), np.nan)
        out[col] = np.where(values > 0, values, np.nan)
    out["n_tilde"] = out["n_treatment"] * out["n_control"] / (out["n_treatment"] + out["n_control"])
    out["p_one_sided"] = one_sided_p(effects.reset_index(drop=True), direction, measure)
    data = bias_data(effects.reset_index(drop=True), direction, measure, [DISPLAY_CUTPOINTS])
    labels = interval_labels(DISPLAY_CUTPOINTS)
    out["p_interval"] = [labels[j] for j in interval_index(data.yi, data.thresholds[DISPLAY_CUTPOINTS])]
    return out


def _predictors(studies: pd.DataFrame, measure: str, notes: list[str]) -> list[str]:
    if measure != "SMD":
        return ["sei", "vi"]
    if studies["n_tilde"].notna().all():
        return ["sqrt_inv_n", "inv_n"]
    notes.append(
        "group sizes (n_treatment, n_control) are not available for every study: PET/PEESE were not fitted "
        "(on the SE they are confounded for an SMD, whose SE grows with the effect itself)"
    )
    return []


def _spread_notes(studies: pd.DataFrame, predictors: list[str]) -> list[str]:
    """Warn when a predictor barely varies: beta1 is then hardly identified and beta0 a far extrapolation."""
    notes = []
    for predictor in [p for p in predictors if PREDICTORS[p][0] == "PET"]:  # PEESE uses their squares
        x = predictor_values(
            predictor, studies["vi"].to_numpy(), studies["n_treatment"].to_numpy(), studies["n_control"].to_numpy()
        )
        distinct = np.unique(np.round(x, 6)).size
        if distinct < 3 or x.max() / x.min() < SPREAD_RATIO_MIN:
            notes.append(
                f"{predictor} only spans {x.min():.3g} to {x.max():.3g} ({distinct} distinct values): the "
                f"slope is weakly identified and the intercept (at {predictor} = 0) is a long extrapolation"
            )
    return notes


def _exact_regression(
    studies: pd.DataFrame, predictor: str, priors: PriorSet, direction: int, rng: np.random.Generator
) -> RegressionFit:
    x = predictor_values(
        predictor, studies["vi"].to_numpy(), studies["n_treatment"].to_numpy(), studies["n_control"].to_numpy()
    )
    X, names = small_study_design(x, predictor)
    b0, b1 = priors.mu.params, priors.slope.params
    post = exact_posterior(
        studies["yi"],
        studies["vi"],
        tau_prior=priors.tau,
        X=X,
        beta_mean=[b0[0], b1[0]],
        beta_cov=np.diag([b0[1] ** 2, b1[1] ** 2]),
        coef_names=names,
        study=list(studies["study"]),
    )
    draws = post.sample(N_DRAWS, rng=rng)
    up = {name: post.prob_greater(name, 0.0) for name in names}
    return RegressionFit(
        name=f"{PREDICTORS[predictor][0]}-{predictor}",
        kind=PREDICTORS[predictor][0],
        predictor=predictor,
        intercept=post.summary("intercept"),
        slope=post.summary(predictor),
        tau=post.summary("tau"),
        prob_small_study=up[predictor] if direction > 0 else 1.0 - up[predictor],
        prob_benefit=up["intercept"] if direction > 0 else 1.0 - up["intercept"],
        engine="exact",
        log_marginal_likelihood=post.log_marginal_likelihood,
        draws={"intercept": draws["intercept"], "slope": draws[predictor]},
    )


def _nuts_regression(
    studies: pd.DataFrame,
    predictor: str,
    priors: PriorSet,
    direction: int,
    seed: int,
    sampler: SamplerSettings,
    progressbar: bool,
) -> RegressionFit:
    x = predictor_values(
        predictor, studies["vi"].to_numpy(), studies["n_treatment"].to_numpy(), studies["n_control"].to_numpy()
    )
    X, names = small_study_design(x, predictor)
    model = build_random_effects_model(
        studies["yi"].to_numpy(),
        studies["vi"].to_numpy(),
        study=list(studies["study"]),
        tau_prior=priors.tau,
        beta_priors=[priors.mu, priors.slope],
        X=X,
        coef_names=names,
    )
    idata, _, retried = sample_with_retry(model, ["beta", "tau"], seed=seed, sampler=sampler, progressbar=progressbar)
    beta = idata.posterior["beta"].to_numpy().reshape(-1, 2)
    tau = idata.posterior["tau"].to_numpy().ravel()
    return RegressionFit(
        name=f"{PREDICTORS[predictor][0]}-{predictor}",
        kind=PREDICTORS[predictor][0],
        predictor=predictor,
        intercept=summarize_draws(beta[:, 0]),
        slope=summarize_draws(beta[:, 1]),
        tau=summarize_draws(tau),
        prob_small_study=float(np.mean(direction * beta[:, 1] > 0)),
        prob_benefit=float(np.mean(direction * beta[:, 0] > 0)),
        engine="nuts",
        diagnostics=diagnose(idata, ["beta", "tau"]),
        retried=retried,
        draws={"intercept": beta[:, 0], "slope": beta[:, 1]},
        posterior=idata,
    )


def _check_config(effects: pd.DataFrame, engine: str, direction: int) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction}")
    missing = {"study", "yi", "vi"} - set(effects.columns)
    if missing:
        raise ValueError(f"effects table lacks columns {sorted(missing)}")
    if len(effects) < MIN_STUDIES:
        raise NotApplicable(f"small-study models need at least {MIN_STUDIES} studies (k = {len(effects)})")


def fit_small_study_effects(
    effects: pd.DataFrame,
    *,
    outcome: Outcome,
    dataset: str = "",
    provenance: str = "",
    measure: str = "SMD",
    priors: PriorSet | None = None,
    engine: str = "exact",
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    progressbar: bool = False,
) -> SmallStudyResult:
    """Fit the publication-bias ensemble and the PET/PEESE single models to one effect per study.

    Parameters
    ----------
    effects : pandas.DataFrame
        Columns ``study, yi, vi`` and optionally ``n_treatment, n_control, n_comparisons`` (as
        :func:`analysis.dataset.effects.study_effects`).
    outcome : Outcome
        The outcome; ``direction`` orients benefit, the one-sided p-values and the bias direction.
    dataset, provenance, measure : str
        Labels for the report; ``measure`` chooses the tests and predictors (module docstring).
    priors : PriorSet, optional
        ``mu`` (beta0 of PET/PEESE and mu of the ensemble), ``tau`` and ``slope`` (beta1).
    engine : {"exact", "nuts"}
        Engine of the PET/PEESE single regressions (the ensemble is always exact quadrature).
    seed : int
        Seed of every random step (NUTS, exact posterior draws for plots).
    sampler : SamplerSettings, optional
        NUTS settings of ``engine="nuts"``.
    progressbar : bool
        Show the sampler's progress display.

    Returns
    -------
    SmallStudyResult
    """
    _check_config(effects, engine, outcome.direction)
    priors, sampler = priors or default_priors(measure), sampler or SamplerSettings()
    direction, notes = outcome.direction, []
    studies = _study_table(effects, direction, measure)
    if len(studies) < MIN_K_ADVISED:
        notes.append(
            f"only k = {len(studies)} studies: small-study methods have little power below "
            f"{MIN_K_ADVISED} studies; read the intervals, not the point estimates"
        )
    rng = np.random.default_rng([seed, 2])
    regressions, predictors = {}, _predictors(studies, measure, notes)
    notes += _spread_notes(studies, predictors)
    for predictor in predictors:
        fit = (
            _exact_regression(studies, predictor, priors, direction, rng)
            if engine == "exact"
            else _nuts_regression(studies, predictor, priors, direction, seed, sampler, progressbar)
        )
        regressions[fit.name] = fit
    re = exact_posterior(studies["yi"], studies["vi"], tau_prior=priors.tau, mu_prior=priors.mu)
    re_draws = {k: v for k, v in re.sample(N_DRAWS, rng=rng).items() if k in ("mu", "tau")}
    averaged = fit_bias_averaged_effects(
        effects.reset_index(drop=True),
        outcome=outcome,
        dataset=dataset,
        provenance=provenance,
        measure=measure,
        priors=priors,
    )
    return SmallStudyResult(
        dataset=dataset,
        provenance=provenance,
        outcome=outcome,
        measure=measure,
        priors=priors.small_study_dict(),
        studies=studies,
        random_effects={"mu": re.summary("mu"), "tau": re.summary("tau")},
        regressions=regressions,
        averaged=averaged,
        egger=regtest(studies["yi"], studies["vi"]),
        notes=notes + averaged.notes,
        re_draws=re_draws,
        settings={"seed": seed, "engine": engine} | ({"sampler": asdict(sampler)} if engine == "nuts" else {}),
    )


def fit_small_study(
    dataset: Dataset,
    outcome: str,
    *,
    priors: PriorSet | None = None,
    engine: str = "exact",
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    progressbar: bool = False,
) -> SmallStudyResult:
    """Small-study and publication-bias analysis of one outcome (``evmeta fit --model small-study``).

    Parameters are those of :func:`fit_small_study_effects`, with the dataset and outcome id in
    place of the effects table (``table``: a precomputed :class:`~analysis.dataset.effects.EffectTable`).
    ``priors`` is the one :class:`~models.priors.PriorSet` of the run (the CLI's ``--mu-prior``/``--tau-prior``).

    Returns
    -------
    SmallStudyResult
    """
    effects = outcome_effects(dataset, table or compute_effects(dataset), outcome)
    return fit_small_study_effects(
        effects,
        outcome=dataset.outcomes[outcome],
        dataset=dataset.name,
        provenance=dataset.provenance,
        measure=dataset.effect_measure,
        priors=priors or default_priors(dataset.effect_measure),
        engine=engine,
        seed=seed,
        sampler=sampler,
        progressbar=progressbar,
    )
