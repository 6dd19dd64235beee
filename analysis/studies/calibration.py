"""Calibration of the checks and predictions of a fit: false-alarm rate, power and coverage on the flagship design.

Each replicate is :func:`analysis.dataset.simulate.simulate_dataset` (the flagship design, its own
seed), written and loaded like any dataset. Every outcome with at least :data:`MIN_K` studies is
fitted with the default model (:func:`analysis.fitting.arm_level.fit_arm_level`) and with the
normal-likelihood NUTS model (what effect-level data get), and checked with
:func:`analysis.checks.calibrated.check_fit`. Scenarios:

- ``null``: no misfit and no selection (``omit_probability=0``): a calibrated check at nominal
  level alpha flags a fraction alpha of them (the false-alarm rate);
- ``outlier``: one study per dataset (drawn at random) has every treatment arm's mean moved by
  :data:`OUTLIER_SHIFT` of its own SD, in a random direction;
- ``heavy_tails``: the residual study effects are multivariate t with :data:`EFFECTS_DF` degrees of
  freedom (same covariance), a misfit of the normal random-effects distribution;
- ``selection``: the simulated Tb.N selection (planned, non-significant Tb.N results omitted with
  the simulator's default probability); only Tb.N is fitted.

The checks are the sampled posterior p-values of :mod:`analysis.checks.predictive` (upper tail for
Q and the largest standardised residual, two-sided for the slope). For comparison the study also
records the posterior predictive p-values averaged over draws (``ppp_<name>``, which use the data
twice) and the Bonferroni-adjusted leave-one-out outlier p (``loo_outlier``); neither is
reported as a check.

Predictions (``null``, default model): for each outcome a new study is drawn from the simulated
population (a random treatment arm of a random study of an independent replicate, its true
effect) and observed with the planned arm size of :func:`analysis.inference.decision.planned_arm_size`;
the study records whether its observed g fell in the 95% predictive interval and whether it
replicated (significant in the direction of benefit), beside the predicted replication probability.

Rates are averaged over outcomes with a Monte Carlo SE clustered by replicate (outcomes of one
dataset share its studies). Run ``python -m analysis.studies.calibration [--reps N]
[--reps-misfit M] [--jobs J] [--out-dir DIR]``; the output is ``calibration.json`` (summary,
settings) and ``calibration.csv`` (one row per replicate, outcome, likelihood and statistic),
SIMULATED data throughout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.checks.calibrated import check_fit
from analysis.checks.loo_pit import arm_loo_pit
from analysis.config import REPORTS_DIR
from analysis.dataset import simulate_design as D
from analysis.dataset.effects import EffectTable, study_effects
from analysis.dataset.load import Dataset
from analysis.dataset.simulate import SimulatedDataset, simulate_dataset
from analysis.fitting.arm_level import fit_arm_level
from analysis.fitting.random_effects import fit_random_effects
from analysis.inference.decision import ALPHA, decision_quantities, new_study_draws
from analysis.report.files import write_csv, write_json
from analysis.results.predictive import PPCResult
from analysis.results.random_effects import MetaAnalysisResult
from analysis.studies.parallel import interleave, map_tasks
from analysis.studies.selection_power import _load, _seed_clustered

__all__ = ["MIN_K", "NOMINAL_LEVELS", "CalibrationTask", "make_tasks", "run_replicate", "summarise"]

#: Outcomes with fewer studies are not checked (the slope needs three of different precision).
MIN_K: int = 3
#: Shift of the outlying study's treatment means, in units of each arm's SD (``outlier`` scenario).
OUTLIER_SHIFT: float = 2.5
#: Degrees of freedom of the t-distributed study effects (``heavy_tails`` scenario).
EFFECTS_DF: float = 3.0
SCENARIOS: tuple[str, ...] = ("null", "outlier", "heavy_tails", "selection")
#: Nominal levels at which the false-alarm rate is reported.
NOMINAL_LEVELS: tuple[float, ...] = (0.05, 0.10)
DEFAULT_SEED: int = 20261202
DEFAULT_REPS: int = 300


@dataclass(frozen=True)
class CalibrationTask:
    """One replicate: its scenario, number and seeds."""

    rep: int
    data_seed: int
    fit_seed: int
    scenario: str = "null"
    outcomes_per_dataset: int = 2


def make_tasks(
    reps: int, seed: int, first_rep: int = 0, scenario: str = "null", outcomes_per_dataset: int = 2
) -> list[CalibrationTask]:
    """Replicates ``first_rep .. first_rep + reps - 1``; seeds depend only on ``(seed, scenario, rep)``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    tasks = []
    for rep in range(first_rep, first_rep + reps):
        data_seed, fit_seed = np.random.SeedSequence([seed, SCENARIOS.index(scenario), rep]).generate_state(2)
        tasks.append(CalibrationTask(rep, int(data_seed), int(fit_seed), scenario, outcomes_per_dataset))
    return tasks


def shift_one_study(arms: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    """Move every treatment mean of one random study by ``OUTLIER_SHIFT`` of its SD (random sign)."""
    study = str(rng.choice(sorted(arms["study"].unique())))
    sign = rng.choice([-1.0, 1.0])
    out = arms.copy()
    rows = (out["study"] == study) & (out["role"] == "treatment")
    sd = out["sd"].astype(float).fillna(out["sem"].astype(float) * np.sqrt(out["n"].astype(float)))  # SEM rows
    out.loc[rows, "mean"] = out.loc[rows, "mean"] + sign * OUTLIER_SHIFT * sd[rows]
    return out, study


def simulate_scenario(task: CalibrationTask) -> tuple[SimulatedDataset, str]:
    """The simulated dataset of a task's scenario, and the outlying study (``outlier`` only, else "")."""
    if task.scenario == "selection":
        return simulate_dataset(task.data_seed), ""
    df = EFFECTS_DF if task.scenario == "heavy_tails" else None
    sim = simulate_dataset(task.data_seed, omit_probability=0.0, effects_df=df)
    if task.scenario != "outlier":
        return sim, ""
    arms, outlier = shift_one_study(sim.arms, np.random.default_rng([task.data_seed, 1]))
    return dataclasses.replace(sim, arms=arms), outlier


def _check_rows(ppc: PPCResult, likelihood: str) -> list[dict]:
    """One row per sampled p-value (the checks) and per averaged ppp (``ppp_<name>``, for comparison)."""
    rows = [{"likelihood": likelihood, "statistic": k, "p_value": v["p_value"]} for k, v in ppc.sampled.items()]
    for name, stat in ppc.statistics.items():
        p = float(stat.get("ppp_two_sided", stat["ppp"]))
        rows.append({"likelihood": likelihood, "statistic": f"ppp_{name}", "p_value": p})
    return rows


def _new_study_truth(task: CalibrationTask, outcome: str) -> float:
    """True effect (natural sign) of a new study from the simulated population: a random treatment
    arm of a random study of an independent replicate of the design."""
    rng = np.random.default_rng([task.data_seed, 2])
    truth = simulate_dataset(int(rng.integers(2**31)), omit_probability=0.0).truth["arm_effects"]
    arms = [effects[outcome] for study in sorted(truth) for effects in truth[study].values() if outcome in effects]
    return float(arms[int(rng.integers(len(arms)))])


def _prediction_rows(fit: MetaAnalysisResult, dataset: Dataset, task: CalibrationTask) -> list[dict]:
    """The predictive interval's coverage and the replication of one simulated new study."""
    quantities = decision_quantities(fit, dataset, seed=task.fit_seed)
    if quantities.new_study_effect is None or quantities.planned_n is None:
        return []
    rng = np.random.default_rng([task.data_seed, 3])
    theta = _new_study_truth(task, fit.outcome.id)
    g, t = new_study_draws(np.array([theta]), quantities.planned_n, rng=rng)
    critical = stats.t.ppf(1 - ALPHA / 2, 2 * quantities.planned_n - 2)
    replicated = bool(abs(t[0]) > critical and fit.outcome.direction * t[0] > 0)
    interval = quantities.new_study_effect
    covered = bool(interval["q025"] <= g[0] <= interval["q975"])
    base = {"likelihood": "arm", "p_value": np.nan}
    return [
        base | {"statistic": "new_study_interval", "predicted": 0.95, "observed": float(covered)},
        base | {"statistic": "replication", "predicted": quantities.prob_replication, "observed": float(replicated)},
    ]


def _outcome_rows(
    task: CalibrationTask, dataset: Dataset, table: EffectTable, outcome: str, outlier: str
) -> list[dict]:
    """Fit one outcome with both likelihoods and return its check (and prediction) rows."""
    fit = fit_arm_level(dataset, outcome, seed=task.fit_seed, table=table)
    gates = {"failed_gates": not fit.converged, "retried": bool(fit.retried)}
    rows = _check_rows(check_fit(fit, dataset, seed=task.fit_seed), "arm")
    loo = arm_loo_pit(fit, dataset, seed=task.fit_seed)
    found = loo.most_outlying == outlier
    rows.append({"likelihood": "arm", "statistic": "loo_outlier", "p_value": loo.p_adjusted, "found_outlier": found})
    if task.scenario == "null":
        rows += _prediction_rows(fit, dataset, task)
    rows = [r | gates for r in rows]
    normal = fit_random_effects(dataset, outcome, engine="nuts", seed=task.fit_seed, table=table)
    normal_gates = {"failed_gates": not normal.converged, "retried": bool(normal.retried)}
    return rows + [r | normal_gates for r in _check_rows(check_fit(normal, dataset, seed=task.fit_seed), "normal")]


def checked_outcomes(task: CalibrationTask, outcomes: list[str]) -> list[str]:
    """The outcomes a replicate fits: Tb.N for ``selection``, else ``task.outcomes_per_dataset`` drawn
    at random (seeded by the replicate), so that many datasets are covered at the same cost."""
    if task.scenario == "selection":
        return [D.SELECTION_OUTCOME]
    rng = np.random.default_rng([task.data_seed, 4])
    chosen = rng.choice(len(outcomes), size=min(task.outcomes_per_dataset, len(outcomes)), replace=False)
    return [outcomes[i] for i in sorted(chosen)]


def run_replicate(task: CalibrationTask) -> list[dict]:
    """Fit and check the outcomes of one simulated flagship dataset (:func:`checked_outcomes`).

    Returns
    -------
    list of dict
        One row per outcome, likelihood and statistic: ``scenario, rep, data_seed, outcome, k,
        likelihood, statistic, p_value`` (checks), ``predicted, observed`` (predictions),
        ``failed_gates, retried, error``; a fit that raises gives one row with the error (never dropped).
    """
    sim, outlier = simulate_scenario(task)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset, table = _load(sim, Path(tmp))
        for outcome in checked_outcomes(task, list(dataset.outcomes)):
            k = len(study_effects(table, outcome))
            if k < MIN_K:
                continue
            base = {"scenario": task.scenario, "rep": task.rep, "data_seed": task.data_seed, "outcome": outcome}
            base |= {"k": k, "outlier_study": outlier, "error": ""}
            try:
                rows += [base | r for r in _outcome_rows(task, dataset, table, outcome, outlier)]
            except Exception as exc:  # noqa: BLE001 - a failing fit is a result of the study, never dropped
                rows.append(base | {"statistic": "", "p_value": np.nan, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return rows


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Flag rate of each check in each scenario at each nominal level, with its replicate-clustered MC SE.

    In the ``null`` scenario the flag rate is the false-alarm rate, otherwise the power.

    Returns
    -------
    pandas.DataFrame
        One row per scenario, likelihood and statistic: ``scenario, likelihood, statistic, n_checks,
        n_datasets``, ``rate_<level>`` and ``rate_<level>_mcse`` for every level of
        :data:`NOMINAL_LEVELS`, and the mean and SD of the p-values (0.5 and 0.289 for a uniform p).
    """
    ok = rows[rows["statistic"].astype(str) != ""].dropna(subset=["p_value"])
    out = []
    for (scenario, likelihood, name), part in ok.groupby(["scenario", "likelihood", "statistic"], sort=False):
        row: dict[str, float | int | str] = {
            "scenario": str(scenario),
            "likelihood": str(likelihood),
            "statistic": str(name),
            "n_checks": len(part),
            "n_datasets": int(part["rep"].nunique()),
        }
        for level in NOMINAL_LEVELS:
            rate, se, _ = _seed_clustered((part["p_value"] < level).astype(float), part["rep"])
            row[f"rate_{level:g}"], row[f"rate_{level:g}_mcse"] = rate, se
        row["p_mean"], row["p_sd"] = float(part["p_value"].mean()), float(part["p_value"].std())
        out.append(row)
    return pd.DataFrame(out)


def summarise_predictions(rows: pd.DataFrame) -> pd.DataFrame:
    """Predicted against observed: coverage of the new study's 95% interval, replication probability.

    Returns
    -------
    pandas.DataFrame
        One row per prediction: ``statistic, n, predicted_mean, observed_rate, observed_mcse,
        brier`` (the Brier score of the replication probability; NaN for the interval).
    """
    if "predicted" not in rows:
        return pd.DataFrame()
    pred = rows.dropna(subset=["predicted"])
    out = []
    for name, part in pred.groupby("statistic", sort=False):
        rate, se, n = _seed_clustered(part["observed"], part["rep"])
        brier = float(((part["predicted"] - part["observed"]) ** 2).mean()) if name == "replication" else np.nan
        out.append(
            {
                "statistic": str(name),
                "n": n,
                "predicted_mean": float(part["predicted"].mean()),
                "observed_rate": rate,
                "observed_mcse": se,
                "brier": brier,
            }
        )
    return pd.DataFrame(out)


def _rate(summary: pd.DataFrame, scenario: str, likelihood: str, statistic: str, level: float) -> str:
    row = summary[
        (summary["scenario"] == scenario) & (summary["likelihood"] == likelihood) & (summary["statistic"] == statistic)
    ]
    if row.empty:
        return "—"
    r = row.iloc[0]
    return f"{100 * r[f'rate_{level:g}']:.1f}% ({100 * r[f'rate_{level:g}_mcse']:.1f}; {r['n_checks']})"


def markdown_table(summary: pd.DataFrame) -> str:
    """Checks and descriptions: false-alarm rate at each level and power at 0.05 per misfit scenario.

    Cells: rate in %, (Monte Carlo SE; number of checked outcomes).
    """
    levels = [f"false alarms at {level:g}" for level in NOMINAL_LEVELS]
    misfits = [s for s in SCENARIOS[1:] if s in set(summary["scenario"])]
    head = ["likelihood", "statistic", *levels, *(f"power at 0.05: {s}" for s in misfits)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = summary[summary["scenario"] == "null"][["likelihood", "statistic"]].drop_duplicates()
    for likelihood, statistic in keys.itertuples(index=False):
        cells = [_rate(summary, "null", likelihood, statistic, level) for level in NOMINAL_LEVELS]
        cells += [_rate(summary, s, likelihood, statistic, 0.05) for s in misfits]
        lines.append(f"| {likelihood} | {statistic} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def predictions_table(predictions: pd.DataFrame) -> str:
    """Predicted against observed for the new-study quantities (null scenario, default model)."""
    lines = ["| prediction | outcomes | predicted (mean) | observed (MCSE) | Brier score |", "|---|---|---|---|---|"]
    for _, r in predictions.iterrows():
        brier = "—" if not np.isfinite(r["brier"]) else f"{r['brier']:.3f}"
        lines.append(
            f"| {r['statistic']} | {r['n']} | {100 * r['predicted_mean']:.1f}% | "
            f"{100 * r['observed_rate']:.1f}% ({100 * r['observed_mcse']:.1f}) | {brier} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.studies.calibration", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="simulated datasets without misfit (null)")
    parser.add_argument(
        "--reps-misfit", type=int, default=0, help="simulated datasets of each misfit scenario (outlier, t, selection)"
    )
    parser.add_argument("--outcomes", type=int, default=2, help="outcomes fitted per dataset (drawn at random)")
    parser.add_argument("--first-rep", type=int, default=0, help="number of the first replicate (continue a run)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="master seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--batch", type=int, default=20, help="replicates between rewrites of the outputs")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of calibration.json/.csv")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        help="merge the calibration.csv files (each with its calibration.json) of runs with disjoint replicates "
        "into --out-dir, without fitting",
    )
    return parser


def read_rows(path: Path) -> pd.DataFrame:
    """A ``calibration.csv`` as written (the scenario ``null`` is a name, not a missing value)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def combine(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of several runs with disjoint replicates; refuses a replicate that appears twice."""
    rows = pd.concat(frames, ignore_index=True)
    key = ["scenario", "rep", "outcome", "likelihood", "statistic"]
    if rows.duplicated(subset=key).any():
        twice = rows.loc[rows.duplicated(subset=key), ["scenario", "rep"]].drop_duplicates()
        raise ValueError(f"replicates in more than one run: {twice.to_dict(orient='records')[:5]}")
    return rows


def _payload(frame: pd.DataFrame, settings: dict, runtime: float, complete: bool) -> dict:
    summary, predictions = summarise(frame), summarise_predictions(frame)
    return {
        "provenance": "simulated",
        "description": __doc__.split("\n\n")[0],
        "complete": complete,
        "settings": settings | {"reps_done": frame.groupby("scenario")["rep"].nunique().to_dict()},
        "runtime_seconds": round(runtime, 1),
        "summary": summary.to_dict(orient="records"),
        "predictions": predictions.to_dict(orient="records"),
        "markdown": markdown_table(summary),
        "markdown_predictions": predictions_table(predictions) if len(predictions) else "",
    }


def _combine_main(paths: list[Path], out_dir: Path) -> int:
    """``--combine``: merge runs (their CSVs and the JSON beside each) into ``out_dir``."""
    studies = [json.loads(p.with_suffix(".json").read_text(encoding="utf-8")) for p in paths]
    frame = combine([read_rows(p) for p in paths])
    settings = dict(studies[0]["settings"]) | {"combined_from": [str(p) for p in paths]}
    settings["reps_planned"] = {
        k: sum(s["settings"]["reps_planned"].get(k, 0) for s in studies) for k in settings["reps_planned"]
    }
    settings.pop("first_rep", None)
    runtime = sum(s["runtime_seconds"] for s in studies)
    payload = _payload(frame, settings, runtime, all(s["complete"] for s in studies))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "calibration.csv", frame)
    write_json(out_dir / "calibration.json", payload)
    print("SIMULATED data.\n" + payload["markdown"] + "\n\n" + payload["markdown_predictions"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: run the replicates in batches, rewrite the outputs after each batch, print the table."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.combine:
        return _combine_main(args.combine, args.out_dir)
    if args.reps < 1 or args.jobs < 1 or args.batch < 1 or args.reps_misfit < 0:
        parser.error("--reps, --jobs and --batch must be >= 1, --reps-misfit >= 0")
    batches = [make_tasks(args.reps, args.seed, args.first_rep, "null", args.outcomes)]
    batches += [
        make_tasks(args.reps_misfit, args.seed, args.first_rep, s, args.outcomes)
        for s in SCENARIOS[1:]
        if args.reps_misfit
    ]
    tasks = interleave(batches)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "reps_planned": {"null": args.reps} | {s: args.reps_misfit for s in SCENARIOS[1:]},
        "outlier_shift_sd": OUTLIER_SHIFT,
        "effects_df": EFFECTS_DF,
        "first_rep": args.first_rep,
        "seed": args.seed,
        "design": "flagship design; no selection (omit_probability=0) except in 'selection'",
        "min_k": MIN_K,
        "outcomes_per_dataset": args.outcomes,
        "nominal_levels": list(NOMINAL_LEVELS),
    }
    start = time.perf_counter()
    rows: list[dict] = []
    for lo in range(0, len(tasks), args.batch):
        rows += [r for chunk in map_tasks(run_replicate, tasks[lo : lo + args.batch], jobs=args.jobs) for r in chunk]
        frame = pd.DataFrame(rows)
        write_csv(args.out_dir / "calibration.csv", frame)
        payload = _payload(frame, settings, time.perf_counter() - start, lo + args.batch >= len(tasks))
        write_json(args.out_dir / "calibration.json", payload)
        print(f"  replicate {min(lo + args.batch, len(tasks))}/{len(tasks)}", file=sys.stderr, flush=True)
    print("SIMULATED data.\n" + payload["markdown"] + "\n\n" + payload["markdown_predictions"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
