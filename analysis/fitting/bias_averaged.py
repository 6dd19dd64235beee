"""Bayesian model averaging over effect, heterogeneity and publication bias (``--model bias-averaged``).

The ensemble is :func:`models.bias_models.ensemble` (RoBMA-PSMA's structure; Bartoš et al. 2023):
effect (mu = 0 or not) x heterogeneity (tau = 0 or not) x bias (none, two monotone selection
models on one-sided p-values, PET, PEESE). Every model's marginal likelihood and posterior are
computed by adaptive quadrature (:func:`models.exact.cube.integrate`); nothing is sampled, so
the result is deterministic.

Data: one effect per study (:func:`analysis.dataset.effects.study_effects`) on the benefit scale.
For an SMD with group sizes, the selection models use each study's own two-sample t-test and
PET/PEESE use sqrt(1/n~) and 1/n~ (the SE of an SMD grows with the effect itself); otherwise the
normal test of y/SE and the SE (:func:`bias_data`). A study that pools several comparisons uses
the normal test of its pooled estimate.

PET and PEESE enter the ensemble only when the design can inform them (:func:`bias_kinds`):
at least :data:`MIN_K_REGRESSION` studies whose largest imprecision is at least
:data:`MIN_SPREAD` times the smallest (Ioannidis & Trikalinos 2007, CMAJ 176:1091; Sterne et al.
2011, BMJ 343:d4002: funnel-asymmetry methods need 10 studies and a range of study sizes).
Without that spread the PET/PEESE slope and the effect at infinite precision are identified by
the prior alone, and a PET model with mu = 0 explains any consistent effect as bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects
from analysis.dataset.load import Dataset, Outcome
from analysis.dataset.problems import NotApplicable
from analysis.results.bias_averaged import BiasAveragedResult, ModelFit, averaged_summary
from models.bias_models import BIAS_KINDS, PEESE_PRIOR, BiasData, BiasModel, EnsemblePriors, ensemble
from models.exact.cube import CubeIntegral, integrate
from models.priors import PriorSet, PriorSpec, default_priors, measure_scale
from models.selection import CUTPOINT_SETS, normal_thresholds, t_test_p, t_thresholds

__all__ = [
    "MIN_K_REGRESSION",
    "MIN_SPREAD",
    "bias_data",
    "bias_kinds",
    "ensemble_priors",
    "fit_bias_averaged",
    "fit_model",
    "integrate_model",
    "fit_bias_averaged_effects",
    "one_sided_p",
]

#: Fewest studies for the ensemble (as the small-study models).
MIN_STUDIES = 3
#: PET/PEESE need this many studies ...
MIN_K_REGRESSION = 10
#: ... and a largest-to-smallest ratio of the PET predictor of at least this (variance ratio 4).
MIN_SPREAD = 2.0


def _has_group_sizes(effects: pd.DataFrame) -> bool:
    cols = {"n_treatment", "n_control"}
    if not cols <= set(effects.columns):
        return False
    n = effects[list(cols)].to_numpy(dtype=float)
    return bool(np.all(np.isfinite(n) & (n >= 2)))


def bias_data(
    effects: pd.DataFrame,
    direction: int,
    measure: str,
    cutpoint_sets: Sequence[Sequence[float]] = CUTPOINT_SETS,
) -> BiasData:
    """Benefit-oriented :class:`~models.bias_models.BiasData` of one outcome's study effects.

    Parameters
    ----------
    effects : pandas.DataFrame
        ``study, yi, vi`` and optionally ``n_treatment, n_control, n_comparisons``.
    direction : {1, -1}
        The outcome's direction of benefit.
    measure : str
        Effect measure (``"SMD"`` uses t-tests and sqrt(1/n~) when group sizes are known).
    cutpoint_sets : sequence of tuple of float
        Cut-points of the selection models.
    """
    y = direction * effects["yi"].to_numpy(dtype=float)
    v = effects["vi"].to_numpy(dtype=float)
    s = np.sqrt(v)
    smd = measure == "SMD" and _has_group_sizes(effects)
    if smd:
        nt, nc = effects["n_treatment"].to_numpy(dtype=float), effects["n_control"].to_numpy(dtype=float)
        n_comp = effects["n_comparisons"].to_numpy(dtype=float) if "n_comparisons" in effects else np.ones(y.size)
        pooled = n_comp > 1
        x = np.sqrt(1.0 / nt + 1.0 / nc)
        thresholds = {}
        for cuts in cutpoint_sets:
            c = t_thresholds(nt, nc, cuts)
            c[pooled] = normal_thresholds(s[pooled], cuts)
            thresholds[tuple(cuts)] = c
        return BiasData(y, v, x, thresholds, "sqrt_inv_n", "t")
    thresholds = {tuple(cuts): normal_thresholds(s, cuts) for cuts in cutpoint_sets}
    return BiasData(y, v, s, thresholds, "sei", "z")


def one_sided_p(effects: pd.DataFrame, direction: int, measure: str) -> np.ndarray:
    """Each study's one-sided p-value in the direction of benefit, by the test :func:`bias_data` uses."""
    y = direction * effects["yi"].to_numpy(dtype=float)
    p = stats.norm.sf(y / np.sqrt(effects["vi"].to_numpy(dtype=float)))
    if measure == "SMD" and _has_group_sizes(effects):
        n_comp = effects["n_comparisons"].to_numpy(dtype=float) if "n_comparisons" in effects else np.ones(y.size)
        nt, nc = effects["n_treatment"].to_numpy(dtype=float), effects["n_control"].to_numpy(dtype=float)
        p = np.where(n_comp > 1, p, t_test_p(y, nt, nc))
    return p


def bias_kinds(data: BiasData) -> tuple[tuple[str, ...], list[str]]:
    """Bias kinds the design can inform (see the module docstring) and notes on what was left out."""
    spread = float(data.x.max() / data.x.min())
    if data.k >= MIN_K_REGRESSION and spread >= MIN_SPREAD:
        return BIAS_KINDS, []
    kinds = tuple(b for b in BIAS_KINDS if b not in ("PET", "PEESE"))
    return kinds, [
        f"PET and PEESE are not in the ensemble: k = {data.k} studies with {data.predictor} spanning "
        f"{data.x.min():.3g} to {data.x.max():.3g} (ratio {spread:.2f}); they need k >= {MIN_K_REGRESSION} "
        f"and a ratio >= {MIN_SPREAD:g} (Ioannidis & Trikalinos 2007), otherwise their adjusted effect is "
        "set by the prior"
    ]


def ensemble_priors(priors: PriorSet, measure: str, bias: tuple[str, ...] = BIAS_KINDS) -> EnsemblePriors:
    """The ensemble's priors from the run's :class:`~models.priors.PriorSet` (mu and tau).

    PET ~ Cauchy+(0, 1) and PEESE ~ Cauchy+(0, 5) as RoBMA-PSMA on an SMD's scale; the PEESE
    coefficient has the units of 1/y when its predictor is the variance, so for other measures its
    scale is divided by :func:`models.priors.measure_scale` (the PET coefficient of y on the SE is
    unit-free).
    """
    peese = PriorSpec("halfcauchy", (PEESE_PRIOR.params[0] / measure_scale(measure),))
    return EnsemblePriors(mu=priors.mu, tau=priors.tau, peese=peese, bias=bias)


def integrate_model(model: BiasModel, data: BiasData, tabulate: tuple[str, ...] = ("mu", "log_tau")) -> CubeIntegral:
    """Quadrature of one model, with tabulated marginals of the coordinates ``tabulate`` (if present)."""
    axes = model.axes()
    tabulated = [axes.index(a) for a in tabulate if a in axes]
    return integrate(lambda c: model.log_density(data, c), model.boxes(), marginal_axes=tabulated)


def fit_model(model: BiasModel, data: BiasData) -> ModelFit:
    """One model of the ensemble, fitted: marginal likelihood and posterior summaries."""
    return ModelFit.from_integral(model, integrate_model(model, data))


def _check(effects: pd.DataFrame, direction: int) -> None:
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction}")
    missing = {"study", "yi", "vi"} - set(effects.columns)
    if missing:
        raise ValueError(f"effects table lacks columns {sorted(missing)}")
    if len(effects) < MIN_STUDIES:
        raise NotApplicable(f"the bias-averaged model needs at least {MIN_STUDIES} studies (k = {len(effects)})")
    v = effects["vi"].to_numpy(dtype=float)
    if not np.all(np.isfinite(v) & (v > 0)) or not np.all(np.isfinite(effects["yi"].to_numpy(dtype=float))):
        raise ValueError("every study needs a finite effect yi and a sampling variance vi > 0")


def fit_bias_averaged_effects(
    effects: pd.DataFrame,
    *,
    outcome: Outcome,
    dataset: str = "",
    provenance: str = "",
    measure: str = "SMD",
    priors: PriorSet | EnsemblePriors | None = None,
) -> BiasAveragedResult:
    """Fit the bias-averaged ensemble to one effect per study.

    Parameters
    ----------
    effects : pandas.DataFrame
        ``study, yi, vi`` (natural scale) and optionally ``n_treatment, n_control, n_comparisons``.
    outcome : Outcome
        The outcome (its ``direction`` orients benefit, p-values and bias).
    dataset, provenance, measure : str
        Labels; ``measure`` also chooses the tests and the PET predictor (:func:`bias_data`).
    priors : PriorSet or EnsemblePriors, optional
        A :class:`PriorSet` supplies mu and tau (the run's priors; the bias kinds follow
        :func:`bias_kinds`); an :class:`EnsemblePriors` is used as given (all its kinds).

    Returns
    -------
    BiasAveragedResult
    """
    _check(effects, outcome.direction)
    if isinstance(priors, EnsemblePriors):
        data, notes = bias_data(effects, outcome.direction, measure, priors.cutpoint_sets), []
        spec = priors
    else:
        run_priors = priors or default_priors(measure)
        data = bias_data(effects, outcome.direction, measure)
        kinds, notes = bias_kinds(data)
        spec = ensemble_priors(run_priors, measure, kinds)
    fits = [fit_model(model, data) for model in ensemble(spec)]
    return BiasAveragedResult(
        dataset=dataset,
        provenance=provenance,
        outcome=outcome,
        measure=measure,
        priors=spec,
        models=fits,
        mu=averaged_summary(fits, "mu"),
        tau=averaged_summary(fits, "tau"),
        predictor=data.predictor,
        test=data.test,
        studies=list(effects["study"].astype(str)),
        notes=notes,
    )


def fit_bias_averaged(
    dataset: Dataset,
    outcome: str,
    *,
    priors: PriorSet | EnsemblePriors | None = None,
    table: EffectTable | None = None,
) -> BiasAveragedResult:
    """Bias-averaged analysis of one outcome of a dataset (``evmeta fit --model bias-averaged``).

    Parameters are those of :func:`fit_bias_averaged_effects`, with the dataset and outcome id in
    place of the effects table (``table``: a precomputed effect table).
    """
    effects = outcome_effects(dataset, table or compute_effects(dataset), outcome)
    return fit_bias_averaged_effects(
        effects,
        outcome=dataset.outcomes[outcome],
        dataset=dataset.name,
        provenance=dataset.provenance,
        measure=dataset.effect_measure,
        priors=priors or default_priors(dataset.effect_measure),
    )
