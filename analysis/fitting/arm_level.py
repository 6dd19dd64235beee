"""Fitting the exact small-sample (arm-level) multilevel random-effects model of one outcome with NUTS.

The likelihood is that of :mod:`models.arm_level`: arm means and SDs of normally distributed
animal data, instead of Hedges' g treated as normal (GitHub issue 7). The arms of an outcome
are exactly those the normal model compares (:func:`analysis.dataset.effects.compute_effects`): each
treatment arm with its control arm; sham arms are not compared and do not enter. Comparisons are
nested in studies: between-study SD ``tau`` and, when some study has two or more comparisons of
the outcome, between-comparison SD ``omega`` (:attr:`models.arm_level.ArmSummaries.multilevel`);
moderators may be study-level or comparison-level (a design row per comparison). Results are
:class:`~analysis.results.random_effects.MetaAnalysisResult` objects like
:func:`analysis.fitting.random_effects.fit_random_effects`
returns, with ``settings["likelihood"] == "arm"`` (normal-model fits have no such key) so that
``to_dict()`` and manifests say which likelihood produced them.

Derived quantities, per posterior draw: ``theta_new = x_0'beta + sqrt(tau^2 + omega^2) * eps``
(the true effect of a new comparison in a new study, ``x_0`` the intercept-only row),
``I2 = (tau^2 + omega^2) / (tau^2 + omega^2 + s^2)`` with ``s^2`` the Higgins–Thompson typical
sampling variance of the outcome's comparisons (Hedges' g; the share of the total variance that
is heterogeneity, as metafor reports it for multilevel models), ``P(benefit)`` from ``mu`` and the outcome's direction.
Study rows carry the normal model's ``yi``/``vi`` for reference and the posterior of the true
SMD ``theta_i`` (shrunken study effect) with its 95% equal-tailed interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects, study_effects
from analysis.dataset.load import Dataset
from analysis.dataset.measures import comparison_pairs
from analysis.dataset.moderators import comparison_table
from analysis.dataset.problems import NotApplicable
from analysis.fitting.random_effects import study_table_from_draws
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import diagnose
from analysis.results.random_effects import MetaAnalysisResult
from analysis.results.summaries import prob_benefit_from_draws, summarize_draws
from models.arm_level import ArmSummaries, Layout, arm_summaries, build_arm_level_model, trim_padding
from models.meta_regression import DEFAULT_SLOPE_SD_JOINT, DEFAULT_SLOPE_SD_SEPARATE, build_design, slope_prior_sds
from models.priors import PriorSet, PriorSpec, default_priors, measure_scale
from models.random_effects import draw_theta_new, i2_draws

__all__ = [
    "DEFAULT_SAMPLER",
    "DEFAULT_SLOPE_PRIOR",
    "LIKELIHOOD",
    "STRUCTURES",
    "check_design",
    "comparison_order",
    "dataset_layout",
    "fit_arm_level",
    "fit_arm_meta_regression",
    "outcome_arm_summaries",
]

#: Marker stored in ``MetaAnalysisResult.settings["likelihood"]``.
LIKELIHOOD = "arm"
#: Default prior of meta-regression slopes (as :data:`models.meta_regression.DEFAULT_SLOPE_SD_SEPARATE`).
DEFAULT_SLOPE_PRIOR = PriorSpec.parse("normal:0:1")
#: Value of ``settings["structure"]``: comparisons nested in studies (tau and omega), or one level.
STRUCTURES = ("multilevel", "single-level")
#: Default NUTS settings: 4 x 1000 draws as for the normal model, but target_accept 0.99. Unlike
#: the normal model, theta cannot be integrated out, and the posterior has curvature (the
#: likelihood sees theta_i * sigma_i; the non-centred tails at large tau and small mu). At 0.95,
#: 2 of 28 fits of the default dataset (7 outcomes x 4 seeds) had 1-2 divergent transitions; at
#: 0.99 none, at about twice the tree size (30-39 leapfrog steps instead of 16-22).
DEFAULT_SAMPLER = SamplerSettings(target_accept=0.99)
#: Separate random stream (after the sampler's) for the draws of theta_new.
_THETA_NEW_STREAM = 1


def outcome_arm_summaries(dataset: Dataset, outcome: str, study: Sequence[str]) -> ArmSummaries:
    """Standardised arm summaries of ``outcome``: compared treatment arms and their control arms.

    Parameters
    ----------
    dataset : Dataset
        An arm-level dataset.
    outcome : str
        Outcome id.
    study : sequence of str
        Study order (that of :func:`analysis.dataset.effects.study_effects`).

    Returns
    -------
    ArmSummaries
        One baseline group per control arm that has at least one treatment arm compared with it.
    """
    pairs = comparison_pairs(dataset.arms)
    pairs = pairs[pairs["outcome"] == outcome]
    controls = pairs.drop_duplicates(["study", "control"])
    rows = [
        pd.DataFrame(
            {
                "study": controls["study"],
                "arm": controls["control"],
                "group": controls["control"],
                "treated": 0.0,
                "mean": controls["mean_c"],
                "sd": controls["sd_c"],
                "n": controls["n_c"],
            }
        ),
        pd.DataFrame(
            {
                "study": pairs["study"],
                "arm": pairs["arm"],
                "group": pairs["control"],
                "treated": 1.0,
                "mean": pairs["mean_t"],
                "sd": pairs["sd_t"],
                "n": pairs["n_t"],
            }
        ),
    ]
    arms = pd.concat(rows, ignore_index=True)
    study_index = {s: i for i, s in enumerate(study)}
    if set(arms["study"]) != set(study_index):
        raise ValueError(f"arm data and study effects of {outcome!r} cover different studies")
    arms["study_ix"] = arms["study"].map(study_index)
    arms = arms.sort_values(["study_ix", "group", "treated"], kind="stable").reset_index(drop=True)
    group_key = arms["study"] + "/" + arms["group"]
    group_ix = pd.Index(group_key.drop_duplicates()).get_indexer(group_key)
    return arm_summaries(
        arms["mean"],
        arms["sd"],
        arms["n"],
        arms["treated"],
        arms["study_ix"],
        group_ix,
        study=list(study),
        arm=list(arms["study"] + "/" + arms["arm"]),
    )


def dataset_layout(dataset: Dataset, table: EffectTable | None = None) -> Layout:
    """The arm-level layout that holds every outcome of ``dataset``.

    All outcomes of a dataset are built for this one layout (padded, see
    :mod:`models.arm_level`), so a worker process compiles the arm-level model once per dataset
    and prior setting instead of once per outcome (:mod:`analysis.fitting.nuts`).
    """
    table = table or compute_effects(dataset)
    datas = []
    for outcome in dataset.outcomes:
        effects = study_effects(table, outcome)
        if not effects.empty:
            datas.append(outcome_arm_summaries(dataset, outcome, list(effects["study"])))
    return Layout.covering(datas)


def check_design(X: np.ndarray | None, coef_names: Sequence[str] | None, k: int) -> tuple[np.ndarray | None, list[str]]:
    """Validate an optional ``(k, p)`` design matrix (first column of ones) and name its coefficients."""
    if X is None:
        if coef_names is not None and list(coef_names) != ["mu"]:
            raise ValueError("coef_names needs a design matrix X")
        return None, ["mu"]
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] != k or not np.all(np.isfinite(X)) or not np.allclose(X[:, 0], 1.0):
        raise ValueError(f"X must be a finite ({k}, p) matrix whose first column is ones, got shape {X.shape}")
    names = (
        ["intercept", *(f"x{j}" for j in range(1, X.shape[1]))] if coef_names is None else [str(c) for c in coef_names]
    )
    if len(names) != X.shape[1] or len(set(names)) != len(names) or "mu" in names:
        raise ValueError(f"coef_names must be {X.shape[1]} unique names other than 'mu', got {names}")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError("the design matrix X is rank deficient")
    return X, names


def fit_arm_level(
    dataset: Dataset,
    outcome: str,
    *,
    priors: PriorSet | None = None,
    X: np.ndarray | None = None,
    coef_names: Sequence[str] | None = None,
    slope_prior: PriorSpec = DEFAULT_SLOPE_PRIOR,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    progressbar: bool = False,
) -> MetaAnalysisResult:
    """Fit the exact small-sample multilevel random-effects model (arm-level likelihood) to one outcome.

    Parameters
    ----------
    dataset : Dataset
        A validated arm-level dataset (:func:`analysis.dataset.load.load_dataset`).
    outcome : str
        Outcome id declared in the dataset.
    priors : PriorSet, optional
        Priors of ``mu`` (the intercept with ``X``), ``tau`` and ``omega``; default
        :func:`models.priors.default_priors` of the dataset's measure.
    X : numpy.ndarray, optional
        Design for a meta-regression, one row per comparison in the order of
        :func:`comparison_order` (study-level moderators repeat their study's value), first column
        ones (centre the other columns so that ``mu`` and ``theta_new`` refer to an average
        comparison).
    coef_names : sequence of str, optional
        Names of the columns of ``X`` (default ``intercept, x1, ...``).
    slope_prior : PriorSpec
        Normal prior of every slope (columns 2..p of ``X``); default N(0, 1).
    seed : int
        Seed of every random step (sampler, theta_new draws).
    sampler : SamplerSettings, optional
        NUTS settings (default :data:`DEFAULT_SAMPLER`: 4 x 1000 draws, target_accept 0.99); a
        fit that fails a convergence gate is retried once with doubled tuning and draws.
    table : EffectTable, optional
        Precomputed effect table of the dataset (computed if omitted).
    progressbar : bool
        Show the sampler's progress display while sampling.

    Returns
    -------
    MetaAnalysisResult
        ``model="random-effects"``, ``engine="nuts"``, ``settings["likelihood"] == "arm"``,
        ``settings["structure"]`` one of :data:`STRUCTURES`; summaries of ``mu``, ``tau``,
        ``theta_new``, ``I2`` and (multilevel) ``omega``; with ``X``, ``settings["beta"]`` holds
        the coefficient summaries.

    Raises
    ------
    ValueError
        For effect-level datasets (no arm data), an effect measure other than SMD
        (:class:`~analysis.dataset.problems.NotApplicable`), an undeclared or unreported outcome,
        or an invalid design; all before any sampling.
    """
    _require_arm_smd(dataset)
    if slope_prior.family != "normal":
        raise ValueError(f"the slope prior must be normal:M:S, got {slope_prior}")
    table = table or compute_effects(dataset)
    effects = outcome_effects(dataset, table, outcome)
    data = outcome_arm_summaries(dataset, outcome, list(effects["study"]))
    X, names = check_design(X, coef_names, len(data.comparison))
    return _fit(
        dataset,
        outcome,
        table,
        effects,
        data,
        X=X,
        names=names,
        slope_priors=[slope_prior] * (len(names) - 1),
        priors=priors or default_priors(dataset.effect_measure),
        seed=seed,
        sampler=sampler or DEFAULT_SAMPLER,
        progressbar=progressbar,
    )


def fit_arm_meta_regression(
    dataset: Dataset,
    outcome: str,
    *,
    moderators: Sequence[str],
    priors: PriorSet | None = None,
    slope_sd: float | None = None,
    center: bool = True,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    progressbar: bool = False,
) -> MetaAnalysisResult:
    """Meta-regression with the arm-level likelihood on study- and comparison-level moderators.

    Each comparison has its own design row (:func:`analysis.dataset.moderators.comparison_table`),
    so a moderator that varies between the arms of a study (dose, formulation) is estimated from
    the within-study contrasts as well as from differences between studies.

    Parameters
    ----------
    dataset : Dataset
        An arm-level SMD dataset.
    outcome : str
        Outcome id.
    moderators : sequence of str
        Declared moderators (study- or comparison-level), entered jointly.
    priors : PriorSet, optional
        Priors of the intercept, ``tau`` and ``omega`` (default: the measure's).
    slope_sd : float, optional
        Standardised slope prior scale ``S`` (:func:`models.meta_regression.slope_prior_sds`);
        default 1 for one moderator and 0.5 for several, as the normal-likelihood meta-regression.
    center : bool
        Centre numeric moderators at their mean over the comparisons.
    seed, sampler, table, progressbar
        As :func:`fit_arm_level`.

    Returns
    -------
    MetaAnalysisResult
        As :func:`fit_arm_level`, with ``settings["beta"]`` (coefficient summaries, benefit not
        applied: natural sign) and ``settings["design_notes"]``.
    """
    _require_arm_smd(dataset)
    unknown = [m for m in moderators if m not in dataset.moderators]
    if unknown or not moderators:
        raise ValueError(
            f"unknown or no moderators {unknown or list(moderators)}; declared: {list(dataset.moderators)}"
        )
    table = table or compute_effects(dataset)
    effects = outcome_effects(dataset, table, outcome)
    data = outcome_arm_summaries(dataset, outcome, list(effects["study"]))
    rows = comparison_table(dataset, outcome)
    rows = rows.set_index(rows["study"] + "/" + rows["arm"]).loc[list(data.comparison)].reset_index(drop=True)
    design = build_design(rows, [dataset.moderators[m] for m in moderators], center=center)
    default = DEFAULT_SLOPE_SD_SEPARATE if len(design.terms) == 1 else DEFAULT_SLOPE_SD_JOINT
    sds = slope_prior_sds(design, (slope_sd or default) * measure_scale(dataset.effect_measure))
    result = _fit(
        dataset,
        outcome,
        table,
        effects,
        data,
        X=design.X,
        names=list(design.coef_names),
        slope_priors=[PriorSpec("normal", (0.0, sds[name])) for name in design.coef_names[1:]],
        priors=priors or default_priors(dataset.effect_measure),
        seed=seed,
        sampler=sampler or DEFAULT_SAMPLER,
        progressbar=progressbar,
    )
    result.settings["design_notes"] = list(design.notes)
    return result


def _fit(
    dataset: Dataset,
    outcome: str,
    table: EffectTable,
    effects: pd.DataFrame,
    data: ArmSummaries,
    *,
    X: np.ndarray | None,
    names: list[str],
    slope_priors: list[PriorSpec],
    priors: PriorSet,
    seed: int,
    sampler: SamplerSettings,
    progressbar: bool,
) -> MetaAnalysisResult:
    multilevel = data.multilevel

    def build(layout: Layout | None) -> pm.Model:
        return build_arm_level_model(
            data,
            tau_prior=priors.tau,
            beta_priors=[priors.mu, *slope_priors],
            X=X,
            coef_names=names,
            layout=layout,
            omega_prior=priors.omega if multilevel else None,
        )

    layout = dataset_layout(dataset, table)
    checked = ["mu" if X is None else "beta", "tau", *(["omega"] if multilevel else []), "theta"]
    idata, used, retried = sample_with_retry(
        build(layout), checked, seed=seed, sampler=sampler, progressbar=progressbar
    )
    idata = trim_padding(idata, data)
    # the result carries the model of the data's own layout, matching the trimmed draws (log-likelihood,
    # log-prior and predictive checks are computed with it); building a graph is cheap, compiling is lazy
    model = build(None)
    _add_derived(idata, _comparison_vi(table, outcome), seed)
    settings = {
        "seed": seed,
        **asdict(used),
        "likelihood": LIKELIHOOD,
        "structure": STRUCTURES[0] if multilevel else STRUCTURES[1],
        "n_comparisons": len(data.comparison),
    }
    return _result(dataset, outcome, effects, idata, model, priors, names, settings, retried, checked)


def comparison_order(dataset: Dataset, outcome: str, table: EffectTable | None = None) -> list[str]:
    """Comparison labels (``study/arm``) of ``outcome`` in the row order :func:`fit_arm_level` expects of ``X``."""
    table = table or compute_effects(dataset)
    effects = outcome_effects(dataset, table, outcome)
    return list(outcome_arm_summaries(dataset, outcome, list(effects["study"])).comparison)


def _require_arm_smd(dataset: Dataset) -> None:
    if dataset.level != "arms":
        raise ValueError(
            f"the arm-level likelihood needs arm-level data (arms.csv); {dataset.name} has effect-level data only"
        )
    if dataset.effect_measure != "SMD":
        raise NotApplicable(
            f"the arm-level likelihood models standardised mean differences (SMD) only; {dataset.name} is "
            f"analysed as {dataset.effect_measure}: use the normal likelihood (--likelihood normal)"
        )


def _comparison_vi(table: EffectTable, outcome: str) -> np.ndarray:
    return table.data.loc[table.data["outcome"] == outcome, "vi"].to_numpy(dtype=float)


def _add_derived(idata: xr.DataTree, vi: np.ndarray, seed: int) -> None:
    """Add ``mu`` (intercept), ``theta_new`` and ``I2`` to the posterior group (``vi``: per comparison)."""
    post = idata.posterior
    if "mu" not in post:
        idata["posterior/mu"] = post["beta"].isel(coef=0, drop=True)
        post = idata.posterior
    rng = np.random.default_rng([seed, _THETA_NEW_STREAM])
    mu, tau = post["mu"].to_numpy(), post["tau"].to_numpy()
    total = np.hypot(tau, post["omega"].to_numpy()) if "omega" in post else tau
    idata["posterior/theta_new"] = xr.DataArray(draw_theta_new(mu, total, rng=rng), dims=("chain", "draw"))
    idata["posterior/I2"] = xr.DataArray(i2_draws(total, vi), dims=("chain", "draw"))


def _result(
    dataset: Dataset,
    outcome: str,
    effects: pd.DataFrame,
    idata: xr.DataTree,
    model: pm.Model,
    priors: PriorSet,
    names: list[str],
    settings: dict,
    retried: bool,
    checked: list[str],
) -> MetaAnalysisResult:
    post = idata.posterior
    theta = post["theta"].to_numpy()
    studies = study_table_from_draws(effects, theta)
    if "beta" in post:
        beta = post["beta"].to_numpy()
        settings = settings | {"beta": {n: summarize_draws(beta[..., j]) for j, n in enumerate(names)}}
    out = dataset.outcomes[outcome]
    return MetaAnalysisResult(
        dataset=dataset.name,
        provenance=dataset.provenance,
        outcome=out,
        model="random-effects",
        engine="nuts",
        priors=priors.multilevel_dict() if "omega" in post else priors.to_dict(),
        measure=dataset.effect_measure,
        summaries={
            p: summarize_draws(post[p].to_numpy()) for p in ("mu", "tau", "omega", "theta_new", "I2") if p in post
        },
        prob_benefit=prob_benefit_from_draws(post["mu"].to_numpy(), out.direction),
        studies=studies,
        diagnostics=diagnose(idata, checked),
        retried=retried,
        posterior=idata,
        settings=settings,
        pymc_model=model,
    )
