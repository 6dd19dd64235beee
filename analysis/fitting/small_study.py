"""Bayesian small-study-effect analysis of one outcome (replaces Egger's test; DESIGN.md §4).

Three kinds of evidence, all described in :mod:`models.small_study`:

1. PET and PEESE meta-regressions on the standard error (``sei``, ``vi``) and, for arm-level
   SMD data, on ``sqrt(1/n~)`` and ``1/n~`` (not confounded with the SMD itself; Zwetsloot et
   al. 2017). Exact engine by default (quadrature, milliseconds), NUTS on request.
2. A step-function selection model (NUTS, θ integrated out): adjusted mu, tau, the publication
   weights omega and ``P(omega_2 < 1)``.
3. For reference, metafor's Egger test (:func:`models.frequentist.regtest`).

The headline bias-adjusted effect follows the conditional PET-PEESE rule (Stanley &
Doucouliagos 2014) in Bayesian form: PEESE when PET's intercept is credibly beneficial
(``P(direction * beta0 > 0) >= 0.975``), else PET; on the ``1/n~`` scale when group sizes are
known, else on the SE scale. Configuration is validated before any sampling starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd
from scipy import stats

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects
from analysis.dataset.load import Dataset, Outcome
from analysis.dataset.problems import NotApplicable
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import diagnose
from analysis.results.small_study import RegressionFit, SelectionFit, SmallStudyResult
from analysis.results.summaries import summarize_draws
from models.exact.posterior import exact_posterior
from models.frequentist import regtest
from models.priors import PriorSet, default_priors
from models.random_effects import build_random_effects_model
from models.small_study import (
    DEFAULT_CUTPOINTS,
    PREDICTORS,
    build_selection_model,
    interval_labels,
    p_interval,
    predictor_values,
    small_study_design,
)

__all__ = ["fit_small_study", "fit_small_study_effects"]

ENGINES = ("exact", "nuts")
#: Number of exact posterior draws kept for plots (funnel lines and predictive region).
N_DRAWS = 4000
#: PET/PEESE regressions and the selection model need at least this many studies.
MIN_STUDIES = 3
#: Fewer studies than this: small-study methods have very low power (Sterne et al. 2011, BMJ 343:d4002).
MIN_K_ADVISED = 10
PET_PEESE_THRESHOLD = 0.975
#: A predictor whose largest/smallest value is below this ratio barely varies across studies.
SPREAD_RATIO_MIN = 1.5
#: NUTS settings of the selection model: its posterior curves sharply where omega and mu trade
#: off, so target_accept starts at 0.95 and the retry (0.99, doubled tuning) is automatic.
SELECTION_SAMPLER = SamplerSettings(target_accept=0.95)


def _study_table(effects: pd.DataFrame, direction: int, cutpoints: Sequence[float]) -> pd.DataFrame:
    out = effects[["study", "yi", "vi"]].copy().reset_index(drop=True)
    out["study"] = out["study"].astype(str)
    out["sei"] = np.sqrt(out["vi"].to_numpy(dtype=float))
    for col in ("n_treatment", "n_control"):
        values = effects[col].to_numpy(dtype=float) if col in effects else np.full(len(out), np.nan)
        out[col] = np.where(values > 0, values, np.nan)
    out["n_tilde"] = out["n_treatment"] * out["n_control"] / (out["n_treatment"] + out["n_control"])
    benefit = direction * out["yi"].to_numpy(dtype=float)
    out["p_one_sided"] = stats.norm.sf(benefit / out["sei"].to_numpy())
    labels = interval_labels(cutpoints)
    out["p_interval"] = [labels[j] for j in p_interval(benefit, out["sei"].to_numpy(), cutpoints)]
    return out


def _predictors(studies: pd.DataFrame, notes: list[str]) -> list[str]:
    if studies["n_tilde"].notna().all():
        return list(PREDICTORS)
    notes.append(
        "group sizes (n_treatment, n_control) are not available for every study: "
        "the sqrt(1/n~) and 1/n~ regressions were skipped (SE-based PET/PEESE only)"
    )
    return ["sei", "vi"]


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


def _fit_selection(
    studies: pd.DataFrame,
    direction: int,
    priors: PriorSet,
    cutpoints: Sequence[float],
    seed: int,
    sampler: SamplerSettings,
    progressbar: bool,
) -> SelectionFit:
    benefit = direction * studies["yi"].to_numpy(dtype=float)
    model = build_selection_model(
        benefit,
        studies["vi"].to_numpy(dtype=float),
        study=list(studies["study"]),
        cutpoints=cutpoints,
        tau_prior=priors.tau,
        mu_prior=priors.mu,
        omega_sigma=priors.omega_sigma,
    )
    idata, _, retried = sample_with_retry(
        model, ["mu", "tau", "omega_free"], seed=seed, sampler=sampler, progressbar=progressbar
    )
    post = idata.posterior
    mu_b = post["mu"].to_numpy().ravel()
    omega = post["omega"].to_numpy().reshape(-1, len(cutpoints) + 1)
    labels = interval_labels(cutpoints)
    counts = [int((studies["p_interval"] == lab).sum()) for lab in labels]
    return SelectionFit(
        cutpoints=tuple(float(c) for c in cutpoints),
        intervals=labels,
        counts=counts,
        mu=summarize_draws(direction * mu_b),
        tau=summarize_draws(post["tau"].to_numpy()),
        omega={lab: summarize_draws(omega[:, j]) for j, lab in enumerate(labels)},
        prob_selection=float(np.mean(omega[:, 1] < 1.0)),
        prior_prob_selection=0.5,
        prob_benefit=float(np.mean(mu_b > 0)),
        diagnostics=diagnose(idata, ["mu", "tau", "omega_free"]),
        retried=retried,
        omega_prior=f"lognormal:0:{priors.omega_sigma:g}",
        posterior=idata,
    )


def _headline(regressions: dict[str, RegressionFit]) -> str:
    scale = ("sqrt_inv_n", "inv_n") if "PET-sqrt_inv_n" in regressions else ("sei", "vi")
    pet = regressions[f"PET-{scale[0]}"]
    return f"PEESE-{scale[1]}" if pet.prob_benefit >= PET_PEESE_THRESHOLD else pet.name


def _check_config(effects: pd.DataFrame, engine: str, cutpoints: Sequence[float], direction: int) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction}")
    missing = {"study", "yi", "vi"} - set(effects.columns)
    if missing:
        raise ValueError(f"effects table lacks columns {sorted(missing)}")
    if len(effects) < MIN_STUDIES:
        raise NotApplicable(f"small-study models need at least {MIN_STUDIES} studies (k = {len(effects)})")
    interval_labels(cutpoints)  # validates the cut-points


def fit_small_study_effects(
    effects: pd.DataFrame,
    *,
    outcome: Outcome,
    dataset: str = "",
    provenance: str = "",
    measure: str = "SMD",
    priors: PriorSet | None = None,
    engine: str = "exact",
    selection: bool = True,
    cutpoints: Sequence[float] = DEFAULT_CUTPOINTS,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    progressbar: bool = False,
) -> SmallStudyResult:
    """Fit the small-study-effect models to one effect per study.

    Parameters
    ----------
    effects : pandas.DataFrame
        Columns ``study, yi, vi`` and optionally ``n_treatment, n_control`` (as
        :func:`analysis.dataset.effects.study_effects`); missing or zero group sizes skip the n-based models.
    outcome : Outcome
        The outcome; ``direction`` orients benefit, the one-sided p-values and the bias direction.
    dataset, provenance, measure : str
        Labels for the report.
    priors : PriorSet, optional
        Priors: ``mu`` (beta0, and mu of the selection model), ``tau``, ``slope`` (beta1) and
        ``omega_sigma`` (defaults documented in :class:`models.priors.PriorSet`).
    engine : {"exact", "nuts"}
        Engine of the PET/PEESE regressions (the selection model always uses NUTS).
    selection : bool
        Fit the step-function selection model (NUTS; seconds).
    cutpoints : sequence of float
        One-sided p-value cut-points of the selection model.
    seed : int
        Seed of every random step (NUTS, exact posterior draws).
    sampler : SamplerSettings, optional
        NUTS settings (default :data:`SELECTION_SAMPLER`).
    progressbar : bool
        Show the sampler's progress display.

    Returns
    -------
    SmallStudyResult
    """
    _check_config(effects, engine, cutpoints, outcome.direction)
    priors, sampler = priors or default_priors(measure), sampler or SELECTION_SAMPLER
    direction, notes = outcome.direction, []
    studies = _study_table(effects, direction, cutpoints)
    if len(studies) < MIN_K_ADVISED:
        notes.append(
            f"only k = {len(studies)} studies: small-study methods have little power below "
            f"{MIN_K_ADVISED} studies; read the intervals, not the point estimates"
        )
    rng = np.random.default_rng([seed, 2])
    regressions, predictors = {}, _predictors(studies, notes)
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
    sel = _fit_selection(studies, direction, priors, cutpoints, seed, sampler, progressbar) if selection else None
    if sel is not None:
        notes += _selection_notes(sel)
    return SmallStudyResult(
        dataset=dataset,
        provenance=provenance,
        outcome=outcome,
        measure=measure,
        priors=priors.small_study_dict(),
        studies=studies,
        random_effects={"mu": re.summary("mu"), "tau": re.summary("tau")},
        regressions=regressions,
        headline=_headline(regressions),
        selection=sel,
        egger=regtest(studies["yi"], studies["vi"]),
        notes=notes,
        re_draws=re_draws,
        settings={"seed": seed, "engine": engine, "cutpoints": list(cutpoints)}
        | ({"sampler": asdict(sampler)} if selection or engine == "nuts" else {}),
    )


def _selection_notes(sel: SelectionFit) -> list[str]:
    notes = []
    empty = [lab for lab, n in zip(sel.intervals, sel.counts, strict=True) if n == 0]
    if empty:
        notes.append(
            f"no study has a one-sided p-value in {', '.join(empty)}: the weight of such intervals is "
            "informed only by the absence of those studies and by the prior"
        )
    if not sel.diagnostics.passed:
        notes.append("the selection model did NOT pass the convergence gates: " + "; ".join(sel.diagnostics.failures()))
    return notes


def fit_small_study(
    dataset: Dataset,
    outcome: str,
    *,
    priors: PriorSet | None = None,
    engine: str = "exact",
    selection: bool = True,
    cutpoints: Sequence[float] = DEFAULT_CUTPOINTS,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    progressbar: bool = False,
) -> SmallStudyResult:
    """Small-study-effect analysis of one outcome of a dataset (``evmeta fit --model small-study``).

    Parameters are those of :func:`fit_small_study_effects`, with the dataset and outcome id in
    place of the effects table (``table``: a precomputed :class:`~analysis.dataset.effects.EffectTable`).
    ``priors`` is the one :class:`~models.priors.PriorSet` of the run (the CLI's ``--mu-prior``/``--tau-prior``):
    its mu prior is the prior of beta0 and of the selection model's mu, its tau prior that of tau,
    its slope prior that of beta1 and omega_sigma that of the selection weights.

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
        selection=selection,
        cutpoints=cutpoints,
        seed=seed,
        sampler=sampler,
        progressbar=progressbar,
    )
