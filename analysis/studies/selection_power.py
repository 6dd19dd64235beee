"""Power and specificity of the small-study models for the simulated BMSC-EV design (Tb.N selection).

Design (fixed, :mod:`analysis.dataset.simulate_design`): the 10 studies of the simulated
``bmsc_ev_osteoporosis`` dataset, their arm sizes and planned outcomes, the true marginal
effects ``MU`` and residual between-study SDs ``TAU_RESIDUAL``, moderators and correlations.
Each replicate is one call of :func:`analysis.dataset.simulate.simulate_dataset` with its own seed,
written to a temporary folder and read back with :func:`analysis.dataset.load.load_dataset`, i.e.
exactly the data a user of the default dataset would analyse. Only Tb.N is subject to
outcome-reporting selection: a planned Tb.N result is omitted with probability
``SELECTION_OMIT_PROB`` (0.9) when the study's own t-test has ``p > SELECTION_ALPHA`` (0.05).
The other six outcomes have no selection and serve as negative controls.

Per replicate and outcome (``k >= 3`` studies; smaller outcomes are kept as rows marked
``analysed = False`` and excluded from the rates) the module records the truth
(``truth.json``), the unadjusted exact random-effects ``mu``
(:func:`analysis.fitting.random_effects.fit_random_effects`, ``engine="exact"``), and the small-study analysis
(:func:`analysis.fitting.small_study.fit_small_study`: PET/PEESE with the exact engine, the
step-function selection model with NUTS). For Tb.N it also refits the unadjusted model to the
*counterfactual* dataset with every planned Tb.N result reported (same seed, omission
probability 0: the simulator draws the omission uniform whether or not it is used, so the
random stream, and therefore every animal, is identical; this is checked on every replicate).
The difference between the two unadjusted estimates is the inflation caused by the selection
itself, free of the sampling error that both share.

Sign convention: every effect column (``mu_*``, ``mean_true_*``, slopes) is benefit-oriented,
i.e. the natural-scale value times the outcome's direction (Tb_Sp has direction -1), so a
positive difference always means "more benefit" and a positive PET slope means small studies
report larger benefits.

Pre-specified flag rules (fixed before any replicate was run; ``t`` in ``THRESHOLDS``):

* ``selection``: ``P(omega_2 < 1 | y) > t`` (step-function selection model, prior 0.5);
* ``PET-sqrt_inv_n``: ``P(small-study) > t`` of the PET regression on ``sqrt(1/n~)``;
* ``PET-sei``: the same on the standard error (known to be confounded for SMDs; reported as a
  reference for its false-positive rate);
* ``PET-sqrt_inv_n eti95`` and ``PET-sei eti95``: the 95% equal-tailed interval of the
  benefit-oriented slope lies entirely above 0 (directional: a credibly *negative* slope is not a
  flag of selection; the slope bounds are in the CSV for any other reading).

Measured (:func:`power_table`): the flag rate of each rule for Tb.N (power) and for the six
outcomes without selection (false-positive rate), and for Tb.N the inflation of the unadjusted
estimate over the population ``mu``, over the mean true effect of the planned studies, and
over the counterfactual estimate without selection, and the shifts of the adjusted estimates.

Run ``python -m analysis.studies.selection_power [--seeds N]``: seeds 1..N plus the default seed
(reported separately, not counted in the rates); writes ``reports/selection_power.csv`` and
``reports/selection_power.json``. All data are SIMULATED.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.config import REPORTS_DIR
from analysis.dataset import simulate_design as D
from analysis.dataset.effects import EffectTable, compute_effects, study_effects
from analysis.dataset.load import Dataset, load_dataset
from analysis.dataset.simulate import (
    DEFAULT_SEED,
    SimulatedDataset,
    simulate_dataset,
    write_dataset,
)
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.fitting.small_study import SELECTION_SAMPLER, fit_small_study
from analysis.report.files import write_csv, write_json
from analysis.results.small_study import RegressionFit, SmallStudyResult
from analysis.studies.parallel import map_tasks

__all__ = [
    "COLUMNS",
    "DEFAULT_N_SEEDS",
    "FIT_SEED",
    "RULES",
    "THRESHOLDS",
    "default_seed_position",
    "flag_rates_by_outcome",
    "power_table",
    "simulate_and_fit",
]

#: Thresholds of the probability rules.
THRESHOLDS: tuple[float, ...] = (0.8, 0.9, 0.95)
#: Seed of every fit (NUTS and exact draws); the same for all replicates, as in the project's default runs.
FIT_SEED = 1
#: Replicates of ``main`` (seeds 1..N): ~3.3 CPU-s per replicate (7 selection-model fits of ~0.4 s,
#: 28 exact regressions, 14 exact random-effects fits, two simulations) after a ~6 s compile, measured
#: on a 2-core machine, so 120 replicates take ~7 CPU-minutes; the Monte Carlo SE of a Tb_N rate
#: near 0.5 is then 0.046 (and about 0.02-0.03 for the false-positive rates over 720 analyses).
DEFAULT_N_SEEDS = 120
MIN_K = 3
#: Rule name -> (column, kind): "prob" rules compare the column with each threshold, "bool" rules are threshold-free.
RULES: dict[str, tuple[str, str]] = {
    "selection": ("prob_selection", "prob"),
    "PET-sqrt_inv_n": ("pet_n_prob", "prob"),
    "PET-sei": ("pet_se_prob", "prob"),
    "PET-sqrt_inv_n eti95": ("pet_n_excludes0", "bool"),
    "PET-sei eti95": ("pet_se_excludes0", "bool"),
}
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
    "mu_true",
    "mean_true_reported",
    "mean_true_planned",
    "mu_unadjusted",
    "mu_unadjusted_all_planned",
    "n_significant",
    "prob_selection",
    "mu_selection",
    "selection_converged",
    "selection_retried",
    "selection_divergences",
    "selection_r_hat_max",
    "selection_ess_bulk_min",
    "pet_n_prob",
    "pet_n_slope_q025",
    "pet_n_slope_q975",
    "pet_n_excludes0",
    "pet_se_prob",
    "pet_se_slope_q025",
    "pet_se_slope_q975",
    "pet_se_excludes0",
    "headline",
    "mu_headline",
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


def _slope_bounds(fit: RegressionFit, direction: int) -> tuple[float, float]:
    """Benefit-oriented 95% interval of a PET slope."""
    lo, hi = direction * fit.slope["q025"], direction * fit.slope["q975"]
    return min(lo, hi), max(lo, hi)


def _fit_columns(result: SmallStudyResult, direction: int) -> dict:
    sel = result.selection
    assert sel is not None  # fitted with selection=True
    out = {
        "n_significant": sel.counts[0],
        "prob_selection": sel.prob_selection,
        "mu_selection": direction * sel.mu["mean"],
        "selection_converged": sel.diagnostics.passed,
        "selection_retried": sel.retried,
        "selection_divergences": sel.diagnostics.divergences,
        "selection_r_hat_max": sel.diagnostics.r_hat_max,
        "selection_ess_bulk_min": sel.diagnostics.ess_bulk_min,
        "headline": result.headline,
        "mu_headline": direction * result.regressions[result.headline].intercept["mean"],
    }
    for tag, name in (("pet_n", "PET-sqrt_inv_n"), ("pet_se", "PET-sei")):
        fit = result.regressions[name]
        lo, hi = _slope_bounds(fit, direction)
        out |= {
            f"{tag}_prob": fit.prob_small_study,
            f"{tag}_slope_q025": lo,
            f"{tag}_slope_q975": hi,
            f"{tag}_excludes0": bool(lo > 0.0),
        }
    return out


def simulate_and_fit(seed: int, *, fit_seed: int = FIT_SEED, sampler: SamplerSettings | None = None) -> pd.DataFrame:
    """Simulate one dataset of the design and fit the small-study models to every outcome.

    Parameters
    ----------
    seed : int
        Seed of :func:`analysis.dataset.simulate.simulate_dataset`.
    fit_seed : int, default FIT_SEED
        Seed of every fit (NUTS of the selection model, exact posterior draws).
    sampler : SamplerSettings, optional
        NUTS settings of the selection model (default :data:`analysis.fitting.small_study.SELECTION_SAMPLER`).

    Returns
    -------
    pandas.DataFrame
        One row per outcome, columns :data:`COLUMNS` (effects benefit-oriented):
        ``selected`` (the outcome is Tb_N), ``analysed`` (``k >= 3``; otherwise the fit columns
        are missing), ``k`` (reporting studies), ``k_planned``, ``n_omitted`` (Tb_N studies
        omitted by the selection, from ``truth.json``), ``mu_true`` (population mu),
        ``mean_true_reported`` / ``mean_true_planned`` (mean true study effect of the reporting
        and of the planning studies), ``mu_unadjusted`` (exact random-effects posterior mean),
        ``mu_unadjusted_all_planned`` (the same on the counterfactual dataset with every planned
        result reported), ``n_significant`` (studies in the first p interval), the selection
        model's ``prob_selection`` = P(omega_2 < 1), ``mu_selection`` and convergence, PET
        ``P(small-study)``, benefit-oriented slope eti95 bounds and whether it lies above 0 on
        the ``sqrt(1/n~)`` (``pet_n_*``) and SE (``pet_se_*``) scales, and the conditional
        PET-PEESE ``headline`` and its ``mu_headline``.
    """
    sim = simulate_dataset(seed)
    full = simulate_dataset(seed, omit_probability=0.0)
    _check_counterfactual(sim, full)
    truth, design = sim.truth, D.design_rows()
    omitted = set(truth["selection"]["omitted_studies"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="evmeta-selection-power-") as tmp:
        dataset, table = _load(sim, Path(tmp) / "selected")
        full_dataset, full_table = _load(full, Path(tmp) / "all_planned")
        for outcome, meta in dataset.outcomes.items():
            d = meta.direction
            reporting = list(study_effects(table, outcome)["study"])
            planned = [s["study"] for s in design if outcome in s["outcomes"]]
            effects = truth["study_effects"]
            row = {
                "seed": seed,
                "outcome": outcome,
                "direction": d,
                "selected": outcome == D.SELECTION_OUTCOME,
                "analysed": len(reporting) >= MIN_K,
                "k": len(reporting),
                "k_planned": len(planned),
                "n_omitted": len(omitted & set(planned)) if outcome == D.SELECTION_OUTCOME else 0,
                "mu_true": d * truth["mu"][outcome],
                "mean_true_reported": float(np.mean([d * effects[s][outcome] for s in reporting]))
                if reporting
                else np.nan,
                "mean_true_planned": float(np.mean([d * effects[s][outcome] for s in planned])),
            }
            full_fit = fit_random_effects(full_dataset, outcome, engine="exact", table=full_table)
            row["mu_unadjusted_all_planned"] = d * full_fit.summaries["mu"]["mean"]
            if row["analysed"]:
                row["mu_unadjusted"] = (
                    d * fit_random_effects(dataset, outcome, engine="exact", table=table).summaries["mu"]["mean"]
                )
                result = fit_small_study(
                    dataset, outcome, seed=fit_seed, table=table, selection=True, sampler=sampler or SELECTION_SAMPLER
                )
                row |= _fit_columns(result, d)
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))


def _flags(runs: pd.DataFrame, rule: str, threshold: float | None) -> pd.Series:
    column, kind = RULES[rule]
    values = runs[column]
    if kind == "bool":
        return values.astype(bool)
    return values.astype(float) > threshold


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


def _quantities(runs: pd.DataFrame) -> dict[str, pd.Series]:
    """Per-row quantities averaged by :func:`power_table` (benefit scale)."""
    shift = runs["mu_unadjusted"] - runs["mu_unadjusted_all_planned"]
    return {
        "inflation_vs_population_mu": runs["mu_unadjusted"] - runs["mu_true"],
        "inflation_vs_planned_mean": runs["mu_unadjusted"] - runs["mean_true_planned"],
        "inflation_by_selection": shift,
        "share_inflated_by_selection": (shift > 0).where(shift.notna()),
        "share_above_population_mu": (runs["mu_unadjusted"] > runs["mu_true"]).where(runs["mu_unadjusted"].notna()),
        "true_mean_reported_minus_planned": runs["mean_true_reported"] - runs["mean_true_planned"],
        "shift_selection_adjusted": runs["mu_selection"] - runs["mu_unadjusted"],
        "shift_headline_adjusted": runs["mu_headline"] - runs["mu_unadjusted"],
        "error_unadjusted": runs["mu_unadjusted"] - runs["mu_true"],
        "error_selection_adjusted": runs["mu_selection"] - runs["mu_true"],
        "error_headline_adjusted": runs["mu_headline"] - runs["mu_true"],
        "selection_converged": runs["selection_converged"].astype(float),
        "n_omitted": runs["n_omitted"].astype(float),
    }


def power_table(runs: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """Flag rates of every rule and the mean inflation, for Tb_N (selected) vs the other outcomes.

    Parameters
    ----------
    runs : pandas.DataFrame
        Rows of :func:`simulate_and_fit` (any number of seeds); rows with ``analysed`` False
        are left out (their count is the difference between ``n_rows`` and ``*_n``).
    thresholds : sequence of float
        Thresholds of the probability rules (``prob > t`` flags).

    Returns
    -------
    pandas.DataFrame
        Columns ``quantity, rule, threshold, selected, selected_mcse, selected_n, unselected,
        unselected_mcse, unselected_n``. ``quantity == "flag_rate"`` rows give the share of
        analyses flagged by ``rule`` (``threshold`` NaN for the eti95 rules): power in
        ``selected``, false-positive rate in ``unselected``. The other quantities (``rule`` empty)
        are means over analyses: ``inflation_vs_population_mu`` (unadjusted mu - population mu),
        ``inflation_vs_planned_mean`` (unadjusted mu - mean true effect of the planning
        studies), ``inflation_by_selection`` (unadjusted mu - unadjusted mu of the
        counterfactual with every planned result reported), ``share_inflated_by_selection``
        (share with that difference > 0), ``share_above_population_mu``,
        ``true_mean_reported_minus_planned``, ``shift_selection_adjusted`` and
        ``shift_headline_adjusted`` (adjusted - unadjusted mu), the errors of the three
        estimates against the population mu, ``selection_converged`` and ``n_omitted``.
        Monte Carlo SEs cluster the rows of one seed (outcomes of one dataset are correlated).
    """
    runs = runs[runs["analysed"].astype(bool)]
    groups = {"selected": runs[runs["selected"].astype(bool)], "unselected": runs[~runs["selected"].astype(bool)]}
    rows = []

    def add(quantity: str, rule: str, threshold: float, series_of: Callable[[pd.DataFrame], pd.Series]) -> None:
        row = {"quantity": quantity, "rule": rule, "threshold": threshold}
        for name, part in groups.items():
            mean, se, n = _seed_clustered(series_of(part), part["seed"])
            row |= {name: mean, f"{name}_mcse": se, f"{name}_n": n}
        rows.append(row)

    for rule, (_, kind) in RULES.items():
        for t in thresholds if kind == "prob" else [np.nan]:
            add("flag_rate", rule, float(t), lambda part, r=rule, t=t: _flags(part, r, t).astype(float))
    for quantity in _quantities(runs.head(0)):
        add(quantity, "", np.nan, lambda part, q=quantity: _quantities(part)[q])
    return pd.DataFrame(rows)


def flag_rates_by_outcome(runs: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """Flag rate of every rule per outcome (analysed rows only).

    Returns
    -------
    pandas.DataFrame
        One row per rule and threshold, one column per outcome (in the design's outcome order).
    """
    runs = runs[runs["analysed"].astype(bool)]
    rows = []
    for rule, (_, kind) in RULES.items():
        for t in thresholds if kind == "prob" else [np.nan]:
            flags = _flags(runs, rule, t).astype(float).groupby(runs["outcome"]).mean()
            rows.append({"rule": rule, "threshold": float(t)} | {o: flags.get(o, np.nan) for o in D.OUTCOMES})
    return pd.DataFrame(rows)


def default_seed_position(default_row: pd.Series, runs: pd.DataFrame) -> dict:
    """Where one analysis (the default seed's Tb_N) falls among the replicates.

    Parameters
    ----------
    default_row : pandas.Series
        A row of :func:`simulate_and_fit`.
    runs : pandas.DataFrame
        Replicate rows (analysed rows are used).

    Returns
    -------
    dict
        Per quantity: the value, and the share of selected (Tb_N) and unselected replicate
        analyses with a value <= it (its percentile rank within each group).
    """
    runs = runs[runs["analysed"].astype(bool)]
    q_default = _quantities(default_row.to_frame().T.infer_objects())
    columns = {
        "prob_selection": runs["prob_selection"],
        "pet_n_prob": runs["pet_n_prob"],
        "pet_se_prob": runs["pet_se_prob"],
    }
    values = {c: float(default_row[c]) for c in columns}
    quantities = _quantities(runs)
    for q in (
        "inflation_vs_population_mu",
        "inflation_vs_planned_mean",
        "inflation_by_selection",
        "shift_selection_adjusted",
        "true_mean_reported_minus_planned",
    ):
        columns[q] = quantities[q]
        values[q] = float(q_default[q].iloc[0])
    selected = runs["selected"].astype(bool)
    out = {}
    for name, series in columns.items():
        series = series.astype(float)
        out[name] = {
            "value": values[name],
            "rank_among_selected": float((series[selected] <= values[name]).mean()),
            "rank_among_unselected": float((series[~selected] <= values[name]).mean()),
        }
    return out


def _markdown(table: pd.DataFrame) -> str:
    lines = ["| rule | threshold | Tb_N flag rate (power) | other outcomes flag rate (FPR) |", "|---|---|---|---|"]
    for _, r in table[table["quantity"] == "flag_rate"].iterrows():
        t = "eti95 > 0" if np.isnan(r["threshold"]) else f"P > {r['threshold']:g}"
        lines.append(
            f"| {r['rule']} | {t} | {r['selected']:.2f} ({r['selected_mcse']:.2f}; n={r['selected_n']}) "
            f"| {r['unselected']:.2f} ({r['unselected_mcse']:.2f}; n={r['unselected_n']}) |"
        )
    return "\n".join(lines)


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
    *frames, default = map_tasks(simulate_and_fit, [*range(1, args.seeds + 1), DEFAULT_SEED], jobs=args.jobs)
    seconds, cpu = time.perf_counter() - clock[0], time.process_time() - clock[1]
    runs = pd.concat(frames, ignore_index=True)
    table = power_table(runs)
    default_tbn = default[default["outcome"] == D.SELECTION_OUTCOME].iloc[0]
    all_rows = pd.concat([runs.assign(is_default_seed=False), default.assign(is_default_seed=True)], ignore_index=True)
    summary = {
        "provenance": "simulated",
        "description": __doc__.split("\n\n")[0],
        "settings": {
            "seeds": [1, args.seeds],
            "default_seed": DEFAULT_SEED,
            "fit_seed": FIT_SEED,
            "thresholds": list(THRESHOLDS),
            "rules": {r: {"column": c, "kind": k} for r, (c, k) in RULES.items()},
            "selection": {
                "outcome": D.SELECTION_OUTCOME,
                "alpha": D.SELECTION_ALPHA,
                "omit_prob": D.SELECTION_OMIT_PROB,
            },
            "mu": dict(D.MU),
            "tau_residual": dict(D.TAU_RESIDUAL),
            "min_k": MIN_K,
            "sampler": dataclasses.asdict(SELECTION_SAMPLER),
            "sign": "benefit-oriented (natural value x direction)",
            "default_seed_in_rates": False,
        },
        "runtime": {"seconds": round(seconds, 1), "cpu_seconds_main_process": round(cpu, 1)},
        "n_rows": len(runs),
        "n_not_analysed": int((~runs["analysed"].astype(bool)).sum()),
        "power_table": table.to_dict(orient="records"),
        "flag_rates_by_outcome": flag_rates_by_outcome(runs).to_dict(orient="records"),
        "default_seed": {"tb_n": default_tbn.to_dict(), "position": default_seed_position(default_tbn, runs)},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "selection_power.csv", all_rows)
    write_json(args.out_dir / "selection_power.json", summary)
    q = table.set_index("quantity")
    print("SIMULATED data; flag rates (Monte Carlo SE; analyses):")
    print(_markdown(table))
    print(
        f"Tb_N unadjusted mu inflated by the selection in {q.loc['share_inflated_by_selection', 'selected']:.2f} "
        f"of datasets (mean {q.loc['inflation_by_selection', 'selected']:+.3f}); "
        f"default seed P(omega_2<1) = {default_tbn['prob_selection']:.3f}"
    )
    print(
        f"{args.seeds} seeds + default in {seconds / 60:.1f} min ({cpu / 60:.1f} CPU-min); "
        f"wrote {args.out_dir / 'selection_power.csv'} and {args.out_dir / 'selection_power.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
