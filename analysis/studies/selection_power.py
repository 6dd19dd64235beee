"""Operating characteristics of the bias-averaged model on the simulated BMSC-EV design (Tb.N selection).

Simulated (fixed design, :mod:`analysis.dataset.simulate_design`): the 10 studies of the
simulated ``bmsc_ev_osteoporosis`` dataset, their arm sizes and planned outcomes, the true
marginal effects ``MU`` and residual between-study SDs ``TAU_RESIDUAL``, moderators and
correlations. Each replicate is one call of :func:`analysis.dataset.simulate.simulate_dataset`
with its own seed, written to a temporary folder and read back with
:func:`analysis.dataset.load.load_dataset`, i.e. exactly the data a user of the default dataset
would analyse. Only Tb.N is subject to outcome-reporting selection: a planned Tb.N result is
omitted with probability ``SELECTION_OMIT_PROB`` (0.9) when the study's own t-test has
``p > SELECTION_ALPHA`` (0.05). The other six outcomes have no selection and are the negative
controls.

Fitted: per replicate and outcome with ``k >= 3`` studies (smaller outcomes are kept as rows
marked ``analysed = False`` and left out of every summary), the bias-averaged ensemble
(:func:`analysis.fitting.bias_averaged.fit_bias_averaged`, default priors): effect (mu = 0 or
free) x heterogeneity (tau = 0 or free) x bias (none; step-function selection models with
cut-points (0.025, 0.05) and (0.05, 0.5) on each study's one-sided t-test p-value; PET/PEESE
only with k >= 10 and a sqrt(1/n~) spread ratio >= 2, which this design never reaches). The fit
is deterministic quadrature, so no fit seed is involved. For Tb.N the plain exact random-effects
model (:func:`analysis.fitting.random_effects.fit_random_effects`, ``engine="exact"``, the same
mu and tau priors as the ensemble's ``mu+tau+none`` model, whose mean it reproduces to ~1e-5) is
also fitted to the *counterfactual* dataset with every planned Tb.N result reported (same seed,
omission probability 0: the simulator draws the omission uniform whether or not it is used, so
the random stream, and therefore every animal, is identical; this is checked on every
replicate). It is the cheaper of the two ways to get that number (~0.04 s against ~1.1 s for a
full ensemble fit). The difference between the unadjusted estimates with and without selection
is the inflation caused by the selection itself, free of the sampling error both share.

Sign convention: every effect column is benefit-oriented, i.e. the natural-scale value times
the outcome's direction (Tb_Sp has direction -1), so a positive error means an overestimate of
the benefit.

Measured, per analysis, against the target ``truth_target``: the mean true effect of the
studies that report the outcome, and for Tb.N the mean true effect of the studies that
*planned* to report it (the effect the selection hides). Three estimators of mu: ``averaged``
(model-averaged, spike at 0 included), ``conditional`` (averaged over the models with an
effect) and ``unadjusted`` (the ensemble's random-effects model without bias): mean error, RMSE,
coverage of the 95% equal-tailed interval and its width (:func:`estimator_table`). The inclusion
Bayes factors: the rates of ``BF_bias > 3``, ``> 10`` and ``< 1/3`` and of ``BF_effect > 3``
(false-alarm rate on the six outcomes without selection, power on Tb.N; :func:`rates_table`),
quantiles of ``BF_bias`` (:func:`bf_quantiles`), and all of these per outcome
(:func:`by_outcome_table`). Monte Carlo SEs cluster the analyses of one seed (the outcomes of
one dataset are correlated).

Done-when rules of the issue (:func:`done_when`; fixed before the run, reported whatever they
give):

(a) on the outcomes without selection (pooled), the averaged mu has ``|mean error| <= 0.15``
    and 95% interval coverage ``>= 0.90``;
(b) on Tb.N the averaged mu's ``|mean error|`` is smaller than the unadjusted mu's (the
    difference of the two, with its Monte Carlo SE paired by seed);
(c) ``BF_bias > 3`` in at most 10% of the analyses without selection.

Run ``python -m analysis.studies.selection_power [--seeds N] [--jobs J] [--out-dir D]``: seeds
1..N plus the default seed (reported separately, not counted in any summary); writes
``reports/selection_power.csv`` (one row per seed and outcome) and
``reports/selection_power.json`` (settings, tables, done-when checks). Runtime: ~8-10 s per
replicate (7 ensemble fits of ~1.1 s, 7 exact random-effects fits of ~0.04 s, two simulations),
so the default 300 replicates take ~20-25 minutes with ``--jobs 2`` on an otherwise idle 2-core
machine (about three times longer when other jobs share the cores); progress goes to stderr.
All data are SIMULATED.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.config import REPORTS_DIR
from analysis.dataset import simulate_design as D
from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects, study_effects
from analysis.dataset.load import Dataset, load_dataset
from analysis.dataset.simulate import (
    DEFAULT_SEED,
    SimulatedDataset,
    simulate_dataset,
    write_dataset,
)
from analysis.fitting.bias_averaged import bias_data, fit_bias_averaged
from analysis.fitting.random_effects import fit_random_effects
from analysis.report.files import write_csv, write_json
from analysis.results.bias_averaged import BiasAveragedResult
from analysis.studies.parallel import map_tasks
from models.selection import interval_index

__all__ = [
    "BF_BIAS_LEVELS",
    "COLUMNS",
    "DEFAULT_N_SEEDS",
    "DONE_WHEN",
    "ESTIMATORS",
    "INFLATION_TOL",
    "QUANTILES",
    "bf_quantiles",
    "by_outcome_table",
    "default_seed_position",
    "done_when",
    "estimator_table",
    "n_significant",
    "rates_table",
    "simulate_and_fit",
]

#: Replicates of ``main`` (seeds 1..N): the Monte Carlo SE of a Tb_N rate near 0.5 is then 0.029
#: (about 0.01-0.015 for the false-alarm rates over ~1800 analyses, clustered by seed).
DEFAULT_N_SEEDS = 300
MIN_K = 3
#: Estimator -> attribute of :class:`~analysis.results.bias_averaged.BiasAveragedResult`.
ESTIMATORS: dict[str, str] = {"averaged": "mu", "conditional": "conditional_mu", "unadjusted": "unadjusted"}
#: Evidence levels of the inclusion Bayes factors: name -> (comparison, level).
BF_BIAS_LEVELS: dict[str, tuple[str, float]] = {"gt_3": (">", 3.0), "gt_10": (">", 10.0), "lt_1/3": ("<", 1 / 3)}
#: Quantiles of BF_bias reported per group and per outcome.
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The issue's done-when thresholds.
DONE_WHEN: dict[str, float] = {"max_abs_mean_error": 0.15, "min_coverage": 0.90, "max_bias_false_alarm": 0.10}
#: A shift of the unadjusted mu by the selection counts as inflation above this: the ensemble's
#: ``mu+tau+none`` model and the exact random-effects fit of the counterfactual agree to ~1e-5
#: when nothing was omitted (two quadratures of the same posterior).
INFLATION_TOL = 1e-4
#: Cut-points whose first interval (one-sided p <= 0.025) counts a study as significant.
SIGNIFICANCE_CUTPOINTS: tuple[float, ...] = (0.025, 0.05)
_BIAS_KINDS = ("none", "selection", "PET", "PEESE")
_TRUTH = (
    "mu_true",
    "mean_true_reported",
    "mean_true_planned",
    "truth_target",
    "mu_unadjusted_all_planned",
)
#: Columns of :func:`simulate_and_fit`, in order.
COLUMNS: tuple[str, ...] = (
    "seed",
    "outcome",
    "direction",
    "selected",
    "analysed",
    "k",
    "k_planned",
    "n_omitted",
    *_TRUTH,
    "n_significant",
    *(f"{e}_{s}" for e in ESTIMATORS for s in ("mean", "q025", "q975", "error", "covered")),
    "tau_mean",
    "prob_benefit",
    "bf_effect",
    "bf_heterogeneity",
    "bf_bias",
    *(f"post_{b}" for b in _BIAS_KINDS),
    "n_models",
    "fit_seconds",
)


def _check_counterfactual(sim: SimulatedDataset, full: SimulatedDataset) -> None:
    """The counterfactual must be the simulated dataset plus omitted Tb.N rows, with Tb.N from every planning study."""
    omitted = set(sim.truth["selection"]["omitted_studies"])
    dropped = (full.arms["outcome"] == D.SELECTION_OUTCOME) & full.arms["study"].isin(omitted)
    kept = full.arms[~dropped].reset_index(drop=True)
    planned = {s for s, r in sim.truth["selection"]["studies"].items() if r["planned"]}
    reported = set(full.arms.loc[full.arms["outcome"] == D.SELECTION_OUTCOME, "study"])
    if (
        not kept.equals(sim.arms.reset_index(drop=True))
        or reported != planned
        or full.truth["study_effects"] != sim.truth["study_effects"]
    ):
        raise RuntimeError(
            "the no-selection counterfactual does not reproduce the simulated dataset: "
            "analysis.dataset.simulate no longer draws the omission uniform unconditionally"
        )


def _load(sim: SimulatedDataset, folder: Path) -> tuple[Dataset, EffectTable]:
    dataset = load_dataset(write_dataset(sim, folder / D.NAME))
    return dataset, compute_effects(dataset)


def n_significant(dataset: Dataset, table: EffectTable, outcome: str) -> int:
    """Studies whose one-sided test in the direction of benefit has ``p <= 0.025``.

    The test is the one the ensemble's selection models use
    (:func:`analysis.fitting.bias_averaged.bias_data`: each study's two-sample t-test for an SMD
    with group sizes, the normal test of a pooled estimate).
    """
    effects = outcome_effects(dataset, table, outcome)
    data = bias_data(effects, dataset.outcomes[outcome].direction, dataset.effect_measure, [SIGNIFICANCE_CUTPOINTS])
    return int(np.sum(interval_index(data.yi, data.thresholds[SIGNIFICANCE_CUTPOINTS]) == 0))


def _truth_columns(sim: SimulatedDataset, table: EffectTable, outcome: str, direction: int) -> dict:
    """Truth of one outcome (benefit scale): population mu, mean true effects and the target."""
    truth, effects = sim.truth, sim.truth["study_effects"]
    reporting = list(study_effects(table, outcome)["study"])
    planned = [s["study"] for s in D.design_rows() if outcome in s["outcomes"]]
    selected = outcome == D.SELECTION_OUTCOME
    omitted = set(truth["selection"]["omitted_studies"])
    row = {
        "selected": selected,
        "analysed": len(reporting) >= MIN_K,
        "k": len(reporting),
        "k_planned": len(planned),
        "n_omitted": len(omitted & set(planned)) if selected else 0,
        "mu_true": direction * truth["mu"][outcome],
        "mean_true_reported": float(np.mean([direction * effects[s][outcome] for s in reporting]))
        if reporting
        else np.nan,
        "mean_true_planned": float(np.mean([direction * effects[s][outcome] for s in planned])),
    }
    row["truth_target"] = row["mean_true_planned"] if selected else row["mean_true_reported"]
    return row


def _estimator_columns(result: BiasAveragedResult, target: float) -> dict:
    """Mean, 95% interval, error against ``target`` and coverage of each estimator (benefit scale)."""
    out = {}
    for name, attribute in ESTIMATORS.items():
        s = getattr(result, attribute)
        out |= {
            f"{name}_mean": s["mean"],
            f"{name}_q025": s["q025"],
            f"{name}_q975": s["q975"],
            f"{name}_error": s["mean"] - target,
            f"{name}_covered": bool(s["q025"] <= target <= s["q975"]),
        }
    return out


def _evidence_columns(result: BiasAveragedResult) -> dict:
    """Inclusion Bayes factors, posterior probability of each bias kind and other ensemble summaries."""
    bf = result.inclusion_bf
    probs = result.posterior_probs
    kinds = np.array([f.model.bias for f in result.models])
    out = {
        "tau_mean": result.tau["mean"],
        "prob_benefit": result.prob_benefit,
        "bf_effect": bf["effect"],
        "bf_heterogeneity": bf["heterogeneity"],
        "bf_bias": bf["bias"],
        "n_models": len(result.models),
    }
    return out | {f"post_{b}": float(probs[kinds == b].sum()) for b in _BIAS_KINDS}


def _fit_columns(dataset: Dataset, table: EffectTable, outcome: str, target: float) -> dict:
    """Fit the ensemble to one outcome and collect its columns (with the fit's wall time)."""
    start = time.perf_counter()
    result = fit_bias_averaged(dataset, outcome, table=table)
    seconds = time.perf_counter() - start
    return (
        {"n_significant": n_significant(dataset, table, outcome)}
        | _estimator_columns(result, target)
        | _evidence_columns(result)
        | {"fit_seconds": seconds}
    )


def simulate_and_fit(seed: int) -> pd.DataFrame:
    """Simulate one dataset of the design and fit the bias-averaged ensemble to every outcome.

    Parameters
    ----------
    seed : int
        Seed of :func:`analysis.dataset.simulate.simulate_dataset` (the fits are deterministic).

    Returns
    -------
    pandas.DataFrame
        One row per outcome, columns :data:`COLUMNS` (effects benefit-oriented): ``selected``
        (the outcome is Tb_N), ``analysed`` (``k >= 3``; otherwise the fit columns are missing),
        ``k`` (reporting studies), ``k_planned``, ``n_omitted`` (Tb_N studies omitted by the
        selection, from ``truth.json``), ``mu_true`` (population mu), ``mean_true_reported`` /
        ``mean_true_planned`` (mean true study effect of the reporting and of the planning
        studies), ``truth_target`` (the planned mean for Tb_N, the reported mean otherwise),
        ``mu_unadjusted_all_planned`` (exact random-effects posterior mean on the counterfactual
        dataset with every planned result reported), ``n_significant`` (studies with one-sided
        p <= 0.025), for each estimator of :data:`ESTIMATORS` its ``_mean``, ``_q025``,
        ``_q975``, ``_error`` (mean - truth_target) and ``_covered`` (the target lies in the
        interval), the averaged ``tau_mean``, ``prob_benefit``, the inclusion Bayes factors
        ``bf_effect``, ``bf_heterogeneity``, ``bf_bias``, the posterior probability of each bias
        kind ``post_none``, ``post_selection`` (both selection models), ``post_PET``,
        ``post_PEESE``, the ensemble's size ``n_models`` and the fit's wall time ``fit_seconds``.
    """
    sim = simulate_dataset(seed)
    full = simulate_dataset(seed, omit_probability=0.0)
    _check_counterfactual(sim, full)
    rows = []
    with tempfile.TemporaryDirectory(prefix="evmeta-selection-power-") as tmp:
        dataset, table = _load(sim, Path(tmp) / "selected")
        full_dataset, full_table = _load(full, Path(tmp) / "all_planned")
        for outcome, meta in dataset.outcomes.items():
            d = meta.direction
            row = {"seed": seed, "outcome": outcome, "direction": d} | _truth_columns(sim, table, outcome, d)
            full_fit = fit_random_effects(full_dataset, outcome, engine="exact", table=full_table)
            row["mu_unadjusted_all_planned"] = d * full_fit.summaries["mu"]["mean"]
            if row["analysed"]:
                row |= _fit_columns(dataset, table, outcome, row["truth_target"])
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))


def _seed_clustered(values: pd.Series, seeds: pd.Series) -> tuple[float, float, int]:
    """Mean of ``values`` and its Monte Carlo SE, clustering rows of the same seed (outcomes are correlated)."""
    ok = values.notna()
    values, seeds = values[ok].astype(float), seeds[ok]
    if values.empty:
        return np.nan, np.nan, 0
    per_seed = values.groupby(seeds.to_numpy()).agg(["sum", "count"])
    m = len(per_seed)
    mean = per_seed["sum"].sum() / per_seed["count"].sum()
    if m < 2:
        return float(mean), np.nan, int(ok.sum())
    # ratio-estimator SE over seeds: residual totals per seed
    resid = per_seed["sum"] - mean * per_seed["count"]
    se = np.sqrt(m / (m - 1) * (resid**2).sum()) / per_seed["count"].sum()
    return float(mean), float(se), int(ok.sum())


def _analysed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["analysed"].astype(bool)]


def _groups(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Analysed rows of Tb_N (``selected``) and of the outcomes without selection (``unselected``)."""
    runs = _analysed(runs)
    selected = runs["selected"].astype(bool)
    return {"selected": runs[selected], "unselected": runs[~selected]}


def _estimator_summary(part: pd.DataFrame, estimator: str) -> dict:
    """Mean error, RMSE, coverage and mean interval width of one estimator over ``part``."""
    error, seeds = part[f"{estimator}_error"].astype(float), part["seed"]
    mean_error, mean_error_se, n = _seed_clustered(error, seeds)
    mse, mse_se, _ = _seed_clustered(error**2, seeds)
    coverage, coverage_se, _ = _seed_clustered(part[f"{estimator}_covered"].astype(float), seeds)
    rmse = float(np.sqrt(mse)) if n else np.nan
    width = (part[f"{estimator}_q975"] - part[f"{estimator}_q025"]).astype(float)
    return {
        "n": n,
        "mean_error": mean_error,
        "mean_error_mcse": mean_error_se,
        "rmse": rmse,
        "rmse_mcse": mse_se / (2.0 * rmse) if n and rmse > 0 else np.nan,  # delta method
        "coverage": coverage,
        "coverage_mcse": coverage_se,
        "mean_width": float(width.mean()) if n else np.nan,
    }


def estimator_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Error, RMSE, coverage and interval width of each estimator, for Tb_N and the outcomes without selection.

    Parameters
    ----------
    runs : pandas.DataFrame
        Rows of :func:`simulate_and_fit` (any number of seeds); rows with ``analysed`` False
        are left out.

    Returns
    -------
    pandas.DataFrame
        One row per group (``selected``: Tb_N; ``unselected``: the six outcomes without
        selection, pooled) and estimator: ``n`` (analyses), ``mean_error`` (against
        ``truth_target``) and its Monte Carlo SE clustered by seed, ``rmse`` (its MCSE by the
        delta method), ``coverage`` of the 95% interval with its MCSE and ``mean_width``.
    """
    rows = []
    for group, part in _groups(runs).items():
        for estimator in ESTIMATORS:
            rows.append({"group": group, "estimator": estimator} | _estimator_summary(part, estimator))
    return pd.DataFrame(rows)


def _exceeds(values: pd.Series, comparison: str, level: float) -> pd.Series:
    """``values > level`` or ``values < level`` as floats (NaN where ``values`` is missing)."""
    values = values.astype(float)
    hit = values > level if comparison == ">" else values < level
    return hit.astype(float).where(values.notna())


def _rate_quantities() -> dict[str, Callable[[pd.DataFrame], pd.Series]]:
    """Per-row quantities averaged by :func:`rates_table` (name -> function of a frame)."""
    quantities: dict[str, Callable[[pd.DataFrame], pd.Series]] = {}
    for name, (comparison, level) in BF_BIAS_LEVELS.items():
        quantities[f"bf_bias_{name}"] = lambda r, c=comparison, v=level: _exceeds(r["bf_bias"], c, v)
    quantities |= {
        "bf_effect_gt_3": lambda r: _exceeds(r["bf_effect"], ">", 3.0),
        "bf_effect_lt_1/3": lambda r: _exceeds(r["bf_effect"], "<", 1 / 3),
        "bf_heterogeneity_gt_3": lambda r: _exceeds(r["bf_heterogeneity"], ">", 3.0),
        "post_selection": lambda r: r["post_selection"].astype(float),
        "share_all_significant": lambda r: (r["n_significant"] == r["k"]).astype(float),
        "n_omitted": lambda r: r["n_omitted"].astype(float),
        "true_mean_reported_minus_planned": lambda r: r["mean_true_reported"] - r["mean_true_planned"],
        "inflation_by_selection": lambda r: r["unadjusted_mean"] - r["mu_unadjusted_all_planned"],
        "share_inflated_by_selection": lambda r: _exceeds(
            r["unadjusted_mean"] - r["mu_unadjusted_all_planned"], ">", INFLATION_TOL
        ),
        "averaged_minus_all_planned": lambda r: r["averaged_mean"] - r["mu_unadjusted_all_planned"],
        "conditional_minus_all_planned": lambda r: r["conditional_mean"] - r["mu_unadjusted_all_planned"],
        "averaged_minus_unadjusted": lambda r: r["averaged_mean"] - r["unadjusted_mean"],
        "conditional_minus_unadjusted": lambda r: r["conditional_mean"] - r["unadjusted_mean"],
    }
    return quantities


def rates_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Bayes-factor evidence rates and selection-related shifts, for Tb_N vs the outcomes without selection.

    Parameters
    ----------
    runs : pandas.DataFrame
        Rows of :func:`simulate_and_fit`; rows with ``analysed`` False are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``quantity, selected, selected_mcse, selected_n, unselected, unselected_mcse,
        unselected_n``: means over analyses with Monte Carlo SEs clustered by seed. Quantities:
        ``bf_bias_gt_3``, ``bf_bias_gt_10``, ``bf_bias_lt_1/3`` (power in ``selected``,
        false-alarm rate in ``unselected``), ``bf_effect_gt_3``, ``bf_effect_lt_1/3``,
        ``bf_heterogeneity_gt_3``, the mean ``post_selection``, ``share_all_significant``
        (every study has p <= 0.025), ``n_omitted``, ``true_mean_reported_minus_planned``,
        ``inflation_by_selection`` (unadjusted mu - exact random-effects mu of the
        counterfactual with every planned result reported), ``share_inflated_by_selection``
        (that difference > :data:`INFLATION_TOL`), ``averaged_minus_all_planned`` and
        ``conditional_minus_all_planned`` (how far the adjusted estimates are from the estimate
        without selection) and ``averaged_minus_unadjusted``, ``conditional_minus_unadjusted``
        (the adjustment's shift).
    """
    groups = _groups(runs)
    rows = []
    for quantity, series_of in _rate_quantities().items():
        row = {"quantity": quantity}
        for name, part in groups.items():
            mean, se, n = _seed_clustered(series_of(part), part["seed"])
            row |= {name: mean, f"{name}_mcse": se, f"{name}_n": n}
        rows.append(row)
    return pd.DataFrame(rows)


def _quantiles(values: pd.Series) -> dict[str, float]:
    values = values.dropna().astype(float)
    return {f"q{round(100 * q):02d}": float(values.quantile(q)) if len(values) else np.nan for q in QUANTILES}


def bf_quantiles(runs: pd.DataFrame, column: str = "bf_bias") -> pd.DataFrame:
    """Quantiles :data:`QUANTILES` of an inclusion Bayes factor for Tb_N and the outcomes without selection.

    Returns
    -------
    pandas.DataFrame
        One row per group: ``group, n, q05, q25, q50, q75, q95``.
    """
    rows = []
    for group, part in _groups(runs).items():
        rows.append({"group": group, "n": int(part[column].notna().sum())} | _quantiles(part[column]))
    return pd.DataFrame(rows)


def _outcome_row(part: pd.DataFrame) -> dict:
    """Evidence rates, BF_bias quantiles and estimator errors/coverage of one outcome's analyses."""
    row: dict = {"n": len(part)}
    for name, (comparison, level) in BF_BIAS_LEVELS.items():
        row[f"bf_bias_{name}"] = float(_exceeds(part["bf_bias"], comparison, level).mean())
    row |= {f"bf_bias_{k}": v for k, v in _quantiles(part["bf_bias"]).items()}
    row["bf_effect_gt_3"] = float(_exceeds(part["bf_effect"], ">", 3.0).mean())
    row["post_selection"] = float(part["post_selection"].astype(float).mean())
    for estimator in ESTIMATORS:
        row[f"{estimator}_mean_error"] = float(part[f"{estimator}_error"].astype(float).mean())
        row[f"{estimator}_coverage"] = float(part[f"{estimator}_covered"].astype(float).mean())
    return row


def by_outcome_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per outcome (analysed rows, design order): the rates and quantiles of BF_bias, the rate of
    ``BF_effect > 3``, the mean ``post_selection`` and each estimator's mean error and coverage.

    Returns
    -------
    pandas.DataFrame
        One row per outcome with at least one analysed row; ``selected`` marks Tb_N.
    """
    runs = _analysed(runs)
    rows = []
    for outcome in D.OUTCOMES:
        part = runs[runs["outcome"] == outcome]
        if len(part):
            rows.append({"outcome": outcome, "selected": outcome == D.SELECTION_OUTCOME} | _outcome_row(part))
    return pd.DataFrame(rows)


def _abs_mean_difference(part: pd.DataFrame, a: str, b: str) -> dict:
    """``|mean error of a| - |mean error of b|`` with its Monte Carlo SE, paired by seed.

    Linearised around the signs of the two mean errors: the difference equals the mean of
    ``sign_a e_a - sign_b e_b`` over the same analyses, whose clustered SE is the paired SE.
    """
    both = part[part[f"{a}_error"].notna() & part[f"{b}_error"].notna()]
    ea, eb = both[f"{a}_error"].astype(float), both[f"{b}_error"].astype(float)
    sa, sb = np.sign(ea.mean()) or 1.0, np.sign(eb.mean()) or 1.0
    diff, se, n = _seed_clustered(sa * ea - sb * eb, both["seed"])
    mae_diff, mae_se, _ = _seed_clustered(ea.abs() - eb.abs(), both["seed"])
    return {
        "n": n,
        f"{a}_mean_error": float(ea.mean()),
        f"{b}_mean_error": float(eb.mean()),
        "abs_mean_error_difference": diff,
        "abs_mean_error_difference_mcse": se,
        "mean_abs_error_difference": mae_diff,
        "mean_abs_error_difference_mcse": mae_se,
    }


def done_when(runs: pd.DataFrame) -> dict:
    """The issue's done-when checks with their numbers (see the module docstring; thresholds :data:`DONE_WHEN`).

    Returns
    -------
    dict
        ``a_unselected_averaged`` (mean error, coverage and their MCSEs; ``passed``),
        ``b_tb_n_averaged_vs_unadjusted`` (the paired difference of the absolute mean errors,
        negative when the averaged estimate is closer, its MCSE and, for reference, the
        difference of the mean absolute errors; ``passed``: the difference is < 0), and
        ``c_bias_false_alarm`` (rate of ``BF_bias > 3`` without selection and its MCSE;
        ``passed``), and ``all_passed``.
    """
    groups = _groups(runs)
    a = _estimator_summary(groups["unselected"], "averaged")
    a["passed"] = bool(
        abs(a["mean_error"]) <= DONE_WHEN["max_abs_mean_error"] and a["coverage"] >= DONE_WHEN["min_coverage"]
    )
    a["rule"] = f"|mean error| <= {DONE_WHEN['max_abs_mean_error']:g} and coverage >= {DONE_WHEN['min_coverage']:g}"
    b = _abs_mean_difference(groups["selected"], "averaged", "unadjusted")
    b["passed"] = bool(b["abs_mean_error_difference"] < 0)
    b["rule"] = "|mean error| of the averaged mu < that of the unadjusted mu on Tb_N"
    unselected = groups["unselected"]
    rate, se, n = _seed_clustered(_exceeds(unselected["bf_bias"], ">", 3.0), unselected["seed"])
    c = {
        "rate": rate,
        "mcse": se,
        "n": n,
        "passed": bool(rate <= DONE_WHEN["max_bias_false_alarm"]),
        "rule": f"BF_bias > 3 in <= {DONE_WHEN['max_bias_false_alarm']:.0%} of analyses without selection",
    }
    return {
        "a_unselected_averaged": a,
        "b_tb_n_averaged_vs_unadjusted": b,
        "c_bias_false_alarm": c,
        "all_passed": a["passed"] and b["passed"] and c["passed"],
    }


def default_seed_position(default_row: pd.Series, runs: pd.DataFrame) -> dict:
    """Where one analysis (the default seed's Tb_N) falls among the replicate analyses.

    Parameters
    ----------
    default_row : pandas.Series
        A row of :func:`simulate_and_fit`.
    runs : pandas.DataFrame
        Replicate rows (analysed rows are used).

    Returns
    -------
    dict
        Per quantity (``bf_bias``, ``bf_effect``, ``post_selection``, the three estimators'
        errors, ``inflation_by_selection``): the value and the share of selected (Tb_N) and
        unselected replicate analyses with a value <= it.
    """
    runs = _analysed(runs)
    selected = runs["selected"].astype(bool)

    def quantities(r: pd.DataFrame | pd.Series) -> dict:
        names = ["bf_bias", "bf_effect", "post_selection", *(f"{e}_error" for e in ESTIMATORS)]
        out = {name: r[name] for name in names}
        return out | {"inflation_by_selection": r["unadjusted_mean"] - r["mu_unadjusted_all_planned"]}

    values, series = quantities(default_row), quantities(runs)
    out = {}
    for name, value in values.items():
        s = series[name].astype(float)
        out[name] = {
            "value": float(value),
            "rank_among_selected": float((s[selected] <= float(value)).mean()),
            "rank_among_unselected": float((s[~selected] <= float(value)).mean()),
        }
    return out


def _fmt(mean: float, se: float) -> str:
    return f"{mean:+.3f} ({se:.3f})"


def _markdown(estimators: pd.DataFrame, rates: pd.DataFrame) -> str:
    lines = [
        "| group | estimator | mean error (MCSE) | RMSE | coverage (MCSE) | mean width |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in estimators.iterrows():
        lines.append(
            f"| {r['group']} | {r['estimator']} | {_fmt(r['mean_error'], r['mean_error_mcse'])} | {r['rmse']:.3f} "
            f"| {r['coverage']:.3f} ({r['coverage_mcse']:.3f}) | {r['mean_width']:.3f} |"
        )
    lines += ["", "| quantity | Tb_N (MCSE; n) | no selection (MCSE; n) |", "|---|---|---|"]
    for _, r in rates.iterrows():
        lines.append(
            f"| {r['quantity']} | {r['selected']:.3f} ({r['selected_mcse']:.3f}; {r['selected_n']}) "
            f"| {r['unselected']:.3f} ({r['unselected_mcse']:.3f}; {r['unselected_n']}) |"
        )
    return "\n".join(lines)


def _progress(start: float) -> Callable[[int, int], None]:
    """A progress callback of :func:`map_tasks` that reports every 10th finished replicate on stderr."""

    def report(done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            print(
                f"{done}/{total} replicates, {(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr, flush=True
            )

    return report


def _settings(n_seeds: int) -> dict:
    return {
        "seeds": [1, n_seeds],
        "default_seed": DEFAULT_SEED,
        "default_seed_in_summaries": False,
        "model": "bias-averaged (analysis.fitting.bias_averaged.fit_bias_averaged, default priors)",
        "counterfactual_model": "exact random effects (fit_random_effects, engine='exact')",
        "estimators": dict(ESTIMATORS),
        "truth_target": "mean true effect of the planning studies for Tb_N, of the reporting studies otherwise",
        "bf_bias_levels": {k: list(v) for k, v in BF_BIAS_LEVELS.items()},
        "quantiles": list(QUANTILES),
        "done_when": dict(DONE_WHEN),
        "significance_cutpoints": list(SIGNIFICANCE_CUTPOINTS),
        "selection": {"outcome": D.SELECTION_OUTCOME, "alpha": D.SELECTION_ALPHA, "omit_prob": D.SELECTION_OMIT_PROB},
        "mu": dict(D.MU),
        "tau_residual": dict(D.TAU_RESIDUAL),
        "min_k": MIN_K,
        "sign": "benefit-oriented (natural value x direction)",
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: run seeds 1..N and the default seed, write the CSV and JSON, print a summary."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.studies.selection_power", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, default=DEFAULT_N_SEEDS, help="replicates (simulation seeds 1..N)")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of selection_power.csv/.json")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (results do not depend on it)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2")
    clock = (time.perf_counter(), time.process_time())
    tasks = [*range(1, args.seeds + 1), DEFAULT_SEED]
    *frames, default = map_tasks(simulate_and_fit, tasks, jobs=args.jobs, progress=_progress(clock[0]))
    seconds, cpu = time.perf_counter() - clock[0], time.process_time() - clock[1]
    runs = pd.concat(frames, ignore_index=True)
    estimators, rates, checks = estimator_table(runs), rates_table(runs), done_when(runs)
    default_tbn = default[default["outcome"] == D.SELECTION_OUTCOME].iloc[0]
    all_rows = pd.concat([runs.assign(is_default_seed=False), default.assign(is_default_seed=True)], ignore_index=True)
    summary = {
        "provenance": "simulated",
        "description": __doc__.split("\n\n")[0],
        "settings": _settings(args.seeds),
        "runtime": {
            "seconds": round(seconds, 1),
            "cpu_seconds_main_process": round(cpu, 1),
            "fit_seconds_mean": float(runs["fit_seconds"].mean()),
            "fit_seconds_total": float(runs["fit_seconds"].sum()),
            "jobs": args.jobs,
        },
        "n_rows": len(runs),
        "n_not_analysed": int((~runs["analysed"].astype(bool)).sum()),
        "done_when": checks,
        "estimator_table": estimators.to_dict(orient="records"),
        "rates_table": rates.to_dict(orient="records"),
        "bf_bias_quantiles": bf_quantiles(runs).to_dict(orient="records"),
        "bf_effect_quantiles": bf_quantiles(runs, "bf_effect").to_dict(orient="records"),
        "by_outcome": by_outcome_table(runs).to_dict(orient="records"),
        "default_seed": {
            "rows": default.to_dict(orient="records"),
            "tb_n_position": default_seed_position(default_tbn, runs),
        },
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "selection_power.csv", all_rows)
    write_json(args.out_dir / "selection_power.json", summary)
    print("SIMULATED data; bias-averaged model (benefit scale; Monte Carlo SE clustered by seed):")
    print(_markdown(estimators, rates))
    for name, check in checks.items():
        if isinstance(check, dict):
            print(f"done-when {name}: {'PASSED' if check['passed'] else 'FAILED'} ({check['rule']})")
    print(
        f"{args.seeds} seeds + default in {seconds / 60:.1f} min; "
        f"wrote {args.out_dir / 'selection_power.csv'} and {args.out_dir / 'selection_power.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
