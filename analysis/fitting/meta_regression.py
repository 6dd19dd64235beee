"""Fitting Bayesian random-effects meta-regressions (subgroup analyses) of one outcome.

:func:`fit_meta_regression` fits ``theta_i ~ N(mu + x_i' beta, tau)`` (design and priors from
:mod:`models.meta_regression`) with NUTS (the graph of :mod:`models.random_effects`, theta
integrated out, convergence gates and one retry as in :mod:`analysis.fitting.random_effects`) or with the exact
quadrature engine (:mod:`models.exact.posterior`; normal priors on the coefficients). Everything is
validated before any sampling starts.

Derived quantities (both engines, 95% equal-tailed intervals):

- subgroup means: ``x_L' beta`` at each level ``L`` of a categorical moderator, with the other
  categorical moderators at their reference level and numeric moderators at their mean over the
  analysed studies (the expected effect of that subgroup; no new-study heterogeneity added);
- contrasts level − reference (= the coefficient) with ``P(contrast > 0)`` and ``P(contrast
  favours treatment)``, i.e. the level shows more benefit than the reference (uses the outcome's
  ``direction``); numeric slopes per unit with ``P(slope > 0)`` and ``P(slope favours treatment)``;
- share of the between-study variance explained: the posterior of the Bayesian R²
  ``V_s / (V_s + tau_s^2)`` (Gelman et al. 2019; :func:`models.meta_regression.bayes_r2_draws`)
  over joint draws ``s`` of ``(beta, tau)`` of this one model: all NUTS draws, or
  :data:`R2_N_DRAWS` independent draws from the exact posterior (tau from its quadrature CDF,
  then ``beta | tau`` from its conditional normal; :meth:`models.exact.posterior.ExactPosterior.sample`,
  seeded by ``seed``). Summarised by mean, SD, median and 95% ETI.
  The former point value ``max(0, 1 - median(tau2_MR) / median(tau2_RE))`` (a ratio of the
  posterior medians of two models, with no uncertainty; the Bayesian analogue of metafor's
  pseudo-R²) is kept in the JSON under ``R2["point_ratio_of_medians"]`` for comparison only: at
  the flagship design's k (4-10) a pure-noise moderator reaches 40% or more in about 11% of fits
  (:mod:`analysis.studies.subgroup_r2`, simulated), so no report shows it.

With the exact engine, the summary of a linear combination ``x' beta`` is exact: the model is
reparametrised as ``beta* = T beta`` with ``x`` as one row of ``T`` (prior ``N(T b0, T B0 T')``,
design ``X T^-1``), which leaves ``p(tau | y)`` unchanged and makes ``x' beta`` a coefficient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects
from analysis.dataset.load import Dataset
from analysis.dataset.problems import NotApplicable
from analysis.fitting.random_effects import ENGINES
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import diagnose
from analysis.results.meta_regression import MetaRegressionResult, SubgroupResults
from analysis.results.summaries import summarize_draws
from models.exact.posterior import ExactPosterior, exact_posterior
from models.meta_regression import (
    DEFAULT_SLOPE_SD_JOINT,
    DEFAULT_SLOPE_SD_SEPARATE,
    Design,
    ModeratorNotEstimable,
    bayes_r2_draws,
    build_design,
    build_meta_regression_model,
    coef_name,
    slope_prior_sds,
)
from models.priors import PriorSet, PriorSpec, default_priors, measure_scale
from models.random_effects import draw_theta, draw_theta_new, i2_draws

__all__ = ["R2_N_DRAWS", "fit_meta_regression", "fit_subgroups_one_at_a_time"]

#: Separate random stream (after the sampler's) for the conditional draws of theta and theta_new.
_THETA_STREAM = 1
#: Separate random stream for the exact engine's joint draws of (beta, tau) behind R².
_R2_STREAM = 2
#: Joint posterior draws of the exact engine behind the R² posterior: the Monte Carlo SE of its
#: 2.5% / 97.5% quantiles is then about sqrt(0.025 * 0.975 / 4000) / density ≈ 0.0025 / density,
#: well below the reported precision (whole percent).
R2_N_DRAWS: int = 4000


def fit_meta_regression(
    dataset: Dataset,
    outcome: str,
    *,
    moderators: list[str] | Literal["all"],
    engine: str = "nuts",
    priors: PriorSet | None = None,
    beta_prior_sd: float | None = None,
    slope_prior_scale: Literal["standardised", "unit"] = "standardised",
    center: bool = True,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    progressbar: bool = False,
) -> MetaRegressionResult:
    """Fit a Bayesian random-effects meta-regression of one outcome on study-level moderators.

    Parameters
    ----------
    dataset : Dataset
        A validated dataset (:func:`analysis.dataset.load.load_dataset`).
    outcome : str
        Outcome id declared in the dataset.
    moderators : list of str or "all"
        Declared moderators entered jointly (one name: one moderator at a time). ``"all"`` uses
        every declared moderator that varies across the analysed studies (the others are skipped
        with a note); a listed moderator that cannot be estimated raises.
    engine : {"nuts", "exact"}
        NUTS (nutpie, on the PyMC model with θ integrated out) or the exact quadrature engine.
    priors : PriorSet, optional
        ``mu`` is the prior of the intercept, ``tau`` of the residual between-study SD
        (defaults :func:`models.priors.default_priors` of the effect measure; SMD: N(0, 3²) and
        HalfNormal(1)).
    beta_prior_sd : float, optional
        Prior sd S of the slopes, ``N(0, S²)`` on the scale ``slope_prior_scale``; default
        1 for one moderator, 0.5 for several (see :mod:`models.meta_regression`) on the SMD scale,
        times :func:`models.priors.measure_scale` for other measures (ROM ×0.5, NMD ×50).
    slope_prior_scale : {"standardised", "unit"}
        ``"standardised"``: S per categorical contrast and per two-SD change of a numeric
        moderator (Gelman 2008); ``"unit"``: S per unit of every design column.
    center : bool
        Centre numeric moderators at their mean over the analysed studies (default); ``False``
        keeps raw values (bayesmeta ``bmr`` / metafor designs ``[1, x]``).
    seed : int
        Seed of every random step (sampler, θ draws, the exact engine's joint draws behind R²).
    sampler : SamplerSettings, optional
        NUTS settings (ignored by the exact engine).
    table : EffectTable, optional
        Precomputed effect table of the dataset (computed if omitted).
    progressbar : bool
        Show the sampler's progress display while sampling.

    Returns
    -------
    MetaRegressionResult

    Raises
    ------
    ValueError
        On an unknown engine, outcome or moderator, a bad prior, or a listed moderator that does
        not vary across the analysed studies (:class:`models.meta_regression.ModeratorNotEstimable`).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    names = _moderator_names(dataset, moderators)
    priors, sampler = priors or default_priors(dataset.effect_measure), sampler or SamplerSettings()
    effects = outcome_effects(dataset, table or compute_effects(dataset), outcome)
    studies = effects[["study"]].merge(dataset.studies, on="study", how="left", validate="one_to_one")
    design = build_design(
        studies, [dataset.moderators[n] for n in names], center=center, skip_constant=moderators == "all"
    )
    default_sd = DEFAULT_SLOPE_SD_JOINT if len(design.terms) > 1 else DEFAULT_SLOPE_SD_SEPARATE
    default_sd *= measure_scale(dataset.effect_measure)
    scale = default_sd if beta_prior_sd is None else float(beta_prior_sd)
    slope_sds = slope_prior_sds(design, scale, per=slope_prior_scale)
    yi, vi = effects["yi"].to_numpy(dtype=float), effects["vi"].to_numpy(dtype=float)
    if engine == "exact":
        fitted = _ExactFit(yi, vi, design, priors, slope_sds)
    else:
        fitted = _NutsFit(yi, vi, design, priors, slope_sds, seed=seed, sampler=sampler, progressbar=progressbar)
    rule = {"sd": scale, "per": slope_prior_scale, "default": beta_prior_sd is None}
    return _assemble(dataset, outcome, effects, design, priors, fitted, slope_sds=slope_sds, slope_rule=rule, seed=seed)


def fit_subgroups_one_at_a_time(
    dataset: Dataset,
    outcome: str,
    *,
    moderators: list[str] | None = None,
    engine: str = "nuts",
    priors: PriorSet | None = None,
    beta_prior_sd: float | None = None,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    progressbar: bool = False,
) -> SubgroupResults:
    """One meta-regression per moderator (the paper's one-moderator-at-a-time subgroup analyses).

    Parameters
    ----------
    dataset, outcome, engine, priors, beta_prior_sd, seed, sampler, table, progressbar
        As for :func:`fit_meta_regression` (every fit uses the same ``seed``).
    moderators : list of str, optional
        Moderators to analyse (default: all declared, in declaration order).

    Returns
    -------
    SubgroupResults
        A dict ``moderator -> MetaRegressionResult`` for the estimable moderators; its
        ``skipped`` attribute maps each moderator that cannot be estimated for this outcome
        (e.g. a single level among the analysed studies) to the reason.
    """
    names = _moderator_names(dataset, "all" if moderators is None else moderators)
    table = table or compute_effects(dataset)
    out = SubgroupResults()
    for name in names:
        try:
            out[name] = fit_meta_regression(
                dataset,
                outcome,
                moderators=[name],
                engine=engine,
                priors=priors,
                beta_prior_sd=beta_prior_sd,
                seed=seed,
                sampler=sampler,
                table=table,
                progressbar=progressbar,
            )
        except ModeratorNotEstimable as err:
            out.skipped[name] = err.reason
    return out


def _moderator_names(dataset: Dataset, moderators: Sequence[str] | str) -> list[str]:
    """Study-level moderator names of a request; ``"all"``: every study-level moderator declared."""
    if moderators == "all":
        names = [n for n, m in dataset.moderators.items() if m.level == "study"]
        if not names:
            raise NotApplicable(f"{dataset.name} declares no study-level moderators")
    elif isinstance(moderators, str):
        raise ValueError(f"moderators must be a list of names or 'all', got {moderators!r}")
    else:
        names = list(moderators)
    unknown = [n for n in names if n not in dataset.moderators]
    if unknown or not names:
        raise ValueError(
            f"unknown or no moderators {unknown or names}; "
            f"{dataset.name} declares: {', '.join(dataset.moderators) or 'none'}"
        )
    comparison_level = [n for n in names if dataset.moderators[n].level != "study"]
    if comparison_level:
        raise NotApplicable(
            f"{', '.join(comparison_level)} vary between the comparisons of a study, and this meta-regression has "
            "one effect per study (normal likelihood): use the arm-level likelihood (evmeta fit --model "
            "meta-regression --likelihood arm) for comparison-level moderators"
        )
    return names


# --- engines --------------------------------------------------------------------------------


class _ExactFit:
    """Exact posterior of the meta-regression and exact summaries of linear combinations."""

    engine = "exact"

    def __init__(self, yi: np.ndarray, vi: np.ndarray, design: Design, priors: PriorSet, slope_sds: dict) -> None:
        self.yi, self.vi, self.design = yi, vi, design
        self.b0 = np.array([priors.mu.params[0]] + [0.0] * (design.p - 1))
        self.B0 = np.diag([priors.mu.params[1] ** 2] + [slope_sds[c] ** 2 for c in design.coef_names[1:]])
        self.tau_prior = priors.tau
        self.post = self._posterior(np.eye(design.p))
        self.diagnostics, self.retried, self.posterior = None, False, None
        self.settings = {"tau_nodes": int(self.post.tau_grid.size)}

    def _posterior(self, T: np.ndarray) -> ExactPosterior:
        cov = T @ self.B0 @ T.T
        return exact_posterior(
            self.yi,
            self.vi,
            tau_prior=self.tau_prior,
            X=self.design.X @ np.linalg.inv(T),
            beta_mean=T @ self.b0,
            beta_cov=0.5 * (cov + cov.T),
            coef_names=list(self.design.coef_names),
            study=list(self.design.study),
        )

    def linear(self, x: np.ndarray) -> dict[str, float]:
        """Summary of ``x' beta`` plus ``prob_gt_0``."""
        j = int(np.argmax(np.abs(x)))
        unit = np.zeros_like(x)
        unit[j] = 1.0
        if np.array_equal(x, unit):
            post = self.post
        else:
            T = np.eye(x.size)
            T[j] = x
            post = self._posterior(T)
        name = self.design.coef_names[j]
        return post.summary(name) | {"prob_gt_0": post.prob_greater(name, 0.0)}

    def scalar(self, name: str) -> dict[str, float]:
        return self.post.summary(name)

    def tau2_median(self) -> float:
        return self.post.summary("tau")["median"] ** 2

    def joint_draws(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` independent joint draws ``(beta (n, p), tau (n,))`` from the exact posterior."""
        draws = self.post.sample(n, rng=rng)
        return draws["beta"], draws["tau"]

    def theta_new(self) -> dict[str, float]:
        """Prediction for a new study at the intercept (reference levels, numeric moderators at their centre)."""
        return self.post.predict(np.eye(self.design.p)[0], new_study=True)

    def study_table(self) -> pd.DataFrame:
        s = self.post.shrinkage()
        return pd.DataFrame(
            {
                "theta_mean": s["mean"].to_numpy(),
                "theta_sd": s["sd"].to_numpy(),
                "theta_q025": s["q025"].to_numpy(),
                "theta_q975": s["q975"].to_numpy(),
            }
        )


class _NutsFit:
    """NUTS draws of the meta-regression (θ integrated out), with θ and θ_new added afterwards."""

    engine = "nuts"

    def __init__(
        self,
        yi: np.ndarray,
        vi: np.ndarray,
        design: Design,
        priors: PriorSet,
        slope_sds: dict,
        *,
        seed: int,
        sampler: SamplerSettings,
        progressbar: bool,
    ) -> None:
        model = build_meta_regression_model(
            yi, vi, design, tau_prior=priors.tau, intercept_prior=priors.mu, slope_sds=slope_sds
        )
        idata, used, self.retried = sample_with_retry(
            model, ["beta", "tau"], seed=seed, sampler=sampler, progressbar=progressbar
        )
        self.diagnostics = diagnose(idata, ["beta", "tau"])
        self.beta = idata.posterior["beta"].transpose("chain", "draw", "coef").to_numpy()
        self.tau = idata.posterior["tau"].to_numpy()
        rng = np.random.default_rng([seed, _THETA_STREAM])
        theta = draw_theta(yi, vi, self.beta @ design.X.T, self.tau, rng=rng)
        idata["posterior/theta"] = xr.DataArray(
            theta, dims=("chain", "draw", "study"), coords={"study": list(design.study)}
        )
        new = draw_theta_new(self.beta[..., 0], self.tau, rng=rng)
        idata["posterior/theta_new"] = xr.DataArray(new, dims=("chain", "draw"))
        idata["posterior/I2"] = xr.DataArray(i2_draws(self.tau, vi), dims=("chain", "draw"))
        self.posterior, self.settings = idata, {"seed": seed, **asdict(used)}

    def linear(self, x: np.ndarray) -> dict[str, float]:
        values = self.beta @ x
        return summarize_draws(values) | {"prob_gt_0": float(np.mean(values > 0))}

    def scalar(self, name: str) -> dict[str, float]:
        return summarize_draws(self.posterior.posterior[name].to_numpy())

    def tau2_median(self) -> float:
        return float(np.median(self.tau**2))

    def joint_draws(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """All NUTS draws ``(beta (chains * draws, p), tau (chains * draws,))``; ``n`` and ``rng`` are unused."""
        return self.beta.reshape(-1, self.beta.shape[-1]), self.tau.reshape(-1)

    def theta_new(self) -> dict[str, float]:
        """Prediction for a new study at the intercept (drawn at construction)."""
        return summarize_draws(self.posterior.posterior["theta_new"].to_numpy())

    def study_table(self) -> pd.DataFrame:
        theta = self.posterior.posterior["theta"].transpose("chain", "draw", "study").to_numpy()
        return pd.DataFrame(
            {
                "theta_mean": theta.mean(axis=(0, 1)),
                "theta_sd": theta.std(axis=(0, 1), ddof=1),
                "theta_q025": np.quantile(theta, 0.025, axis=(0, 1)),
                "theta_q975": np.quantile(theta, 0.975, axis=(0, 1)),
            }
        )


# --- derived quantities ---------------------------------------------------------------------


def _with_benefit(summary: dict[str, float], direction: int) -> dict[str, float]:
    """Add ``prob_benefit``: P(quantity favours treatment) = P(direction × quantity > 0)."""
    p = summary["prob_gt_0"]
    return summary | {"prob_benefit": p if direction > 0 else 1.0 - p}


def _subgroups_and_contrasts(
    fitted: _ExactFit | _NutsFit, design: Design, direction: int
) -> tuple[list[dict], list[dict]]:
    subgroups, contrasts = [], []
    for term in (t for t in design.terms if t.type == "categorical"):
        for level in term.levels:
            x = design.level_row(term.moderator, level)
            subgroups.append(
                {
                    "moderator": term.moderator,
                    "level": level,
                    "is_reference": level == term.reference,
                    "n_studies": term.counts[level],
                }
                | _with_benefit(fitted.linear(x), direction)
            )
            if level != term.reference:
                coef = coef_name(term.moderator, level)
                unit = np.eye(design.p)[design.coef_names.index(coef)]
                contrasts.append(
                    {"moderator": term.moderator, "level": level, "reference": term.reference, "coef": coef}
                    | _with_benefit(fitted.linear(unit), direction)
                )
    return subgroups, contrasts


def _slopes(fitted: _ExactFit | _NutsFit, design: Design, direction: int) -> list[dict]:
    out = []
    for term in (t for t in design.terms if t.type == "numeric"):
        unit = np.eye(design.p)[design.coef_names.index(term.columns[0])]
        out.append(
            {
                "moderator": term.moderator,
                "coef": term.columns[0],
                "per": "unit",
                "mean_x": term.mean,
                "sd_x": term.sd,
                "centre": term.centre,
            }
            | _with_benefit(fitted.linear(unit), direction)
        )
    return out


def _r2(fitted: _ExactFit | _NutsFit, design: Design, *, seed: int) -> dict:
    """Posterior of the Bayesian R² (Gelman et al. 2019) from the joint draws of this model."""
    beta, tau = fitted.joint_draws(R2_N_DRAWS, np.random.default_rng([seed, _R2_STREAM]))
    return summarize_draws(bayes_r2_draws(design.X, beta, tau)) | {
        "n_draws": int(tau.size),
        "draws": "all NUTS draws" if fitted.engine == "nuts" else f"independent exact-posterior draws, seed {seed}",
        "definition": "Bayesian R2 (Gelman, Goodrich, Gabry & Vehtari 2019, Am Stat 73:307): per joint posterior "
        "draw s of (beta, tau) of this meta-regression, R2_s = V_s / (V_s + tau_s^2), V_s = variance (ddof 1) "
        "over the k studies of x_i' beta_s without the intercept; summaries over the draws (95% ETI)",
    }


def _point_ratio_of_medians(
    fitted: _ExactFit | _NutsFit, yi: np.ndarray, vi: np.ndarray, design: Design, priors: PriorSet
) -> dict:
    """The former point pseudo-R² (1 − ratio of posterior medians of τ², truncated at 0); JSON only."""
    plain = exact_posterior(yi, vi, tau_prior=priors.tau, mu_prior=priors.mu, study=list(design.study))
    tau2_re, tau2_mr = plain.summary("tau")["median"] ** 2, fitted.tau2_median()
    ratio = tau2_mr / tau2_re if tau2_re > 0 else float("nan")
    return {
        "value": max(0.0, 1.0 - ratio) if np.isfinite(ratio) else float("nan"),
        "tau2_median_RE": tau2_re,
        "tau2_median_MR": tau2_mr,
        "ratio": ratio,
        "definition": "max(0, 1 - median(tau2 | meta-regression) / median(tau2 | random effects)), "
        "Bayesian analogue of metafor's pseudo-R2; random-effects fit on the same studies, "
        "same mu/tau priors, exact engine",
        "caution": "a point value without uncertainty, from two models; a pure-noise moderator often reaches "
        "large values at small k (analysis.studies.subgroup_r2). Kept for comparison only; not reported",
    }


def _prior_strings(design: Design, priors: PriorSet, slope_sds: dict[str, float]) -> dict[str, str]:
    out = {"intercept": str(priors.mu), "tau": str(priors.tau)}
    return out | {c: str(PriorSpec("normal", (0.0, slope_sds[c]))) for c in design.coef_names[1:]}


def _assemble(
    dataset: Dataset,
    outcome: str,
    effects: pd.DataFrame,
    design: Design,
    priors: PriorSet,
    fitted: _ExactFit | _NutsFit,
    *,
    slope_sds: dict[str, float],
    slope_rule: dict,
    seed: int,
) -> MetaRegressionResult:
    direction = dataset.outcomes[outcome].direction
    yi, vi = effects["yi"].to_numpy(dtype=float), effects["vi"].to_numpy(dtype=float)
    eye = np.eye(design.p)
    beta = {name: fitted.linear(eye[j]) for j, name in enumerate(design.coef_names)}
    subgroups, contrasts = _subgroups_and_contrasts(fitted, design, direction)
    studies = pd.concat([effects[["study", "yi", "vi"]].reset_index(drop=True), fitted.study_table()], axis=1)
    r2 = _r2(fitted, design, seed=seed)
    r2["point_ratio_of_medians"] = _point_ratio_of_medians(fitted, yi, vi, design, priors)
    summaries = {
        "mu": {k: v for k, v in beta[design.coef_names[0]].items() if k != "prob_gt_0"},
        "tau": fitted.scalar("tau"),
        "I2": fitted.scalar("I2"),
        "theta_new": fitted.theta_new(),
    }
    return MetaRegressionResult(
        dataset=dataset.name,
        provenance=dataset.provenance,
        outcome=dataset.outcomes[outcome],
        engine=fitted.engine,
        priors=_prior_strings(design, priors, slope_sds),
        slope_prior=slope_rule,
        design=design,
        summaries=summaries,
        beta=beta,
        subgroups=subgroups,
        contrasts=contrasts,
        slopes=_slopes(fitted, design, direction),
        R2=r2,
        prob_benefit=_with_benefit(beta[design.coef_names[0]], direction)["prob_benefit"],
        studies=studies,
        diagnostics=fitted.diagnostics,
        retried=fitted.retried,
        posterior=fitted.posterior,
        settings=fitted.settings,
        measure=dataset.effect_measure,
    )
