"""Calibration of the default fit's predictive checks: false-alarm rate and power on the flagship design.

Each replicate is :func:`analysis.dataset.simulate.simulate_dataset` (the flagship design, its own
seed) *without* the simulated Tb.N selection (``omit_probability=0``), written and loaded like
any dataset. Every outcome with at least :data:`MIN_K` studies is fitted with the default model
(:func:`analysis.fitting.arm_level.fit_arm_level`) and checked with
:func:`analysis.checks.predictive_arm.arm_posterior_predictive_check` and
:func:`analysis.checks.loo_pit.arm_loo_pit`. Scenarios:

- ``null``: the data as simulated, from the model's own family (random study effects, normal
  animals): a calibrated check at nominal level alpha flags a fraction alpha of them;
- ``outlier``: one study per dataset (drawn at random) has every treatment arm's mean moved by
  :data:`OUTLIER_SHIFT` of its own SD, in a random direction: the power against one outlying study.

The p-value of each statistic is the one the report prints: the upper-tail ppp for Q and the
largest standardised residual, the two-sided ppp for the Egger-type slope, the Bonferroni-adjusted
smallest leave-one-out p for ``loo_outlier``. Rates are averaged
over outcomes with a Monte Carlo SE clustered by replicate (outcomes of one dataset share its
studies). Posterior predictive p-values use the data twice and are known to be conservative
(Bayarri & Berger 2000); this study measures by how much on this design.

Run ``python -m analysis.studies.calibration [--reps N] [--jobs J] [--out-dir DIR]``; the output is
``calibration.json`` (summary, settings) and ``calibration.csv`` (one row per replicate, outcome
and statistic), SIMULATED data throughout.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.checks.loo_pit import arm_loo_pit
from analysis.checks.predictive_arm import arm_posterior_predictive_check
from analysis.config import REPORTS_DIR
from analysis.dataset.effects import study_effects
from analysis.dataset.simulate import simulate_dataset
from analysis.fitting.arm_level import fit_arm_level
from analysis.report.files import write_csv, write_json
from analysis.studies.likelihood_study import interleave
from analysis.studies.parallel import map_tasks
from analysis.studies.selection_power import _load, _seed_clustered

__all__ = ["MIN_K", "NOMINAL_LEVELS", "CalibrationTask", "make_tasks", "run_replicate", "summarise"]

#: Outcomes with fewer studies are not checked (the slope needs three of different precision).
MIN_K: int = 3
#: Shift of the outlying study's treatment means, in units of each arm's SD (``outlier`` scenario).
OUTLIER_SHIFT: float = 2.5
SCENARIOS: tuple[str, ...] = ("null", "outlier")
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


def make_tasks(reps: int, seed: int, first_rep: int = 0, scenario: str = "null") -> list[CalibrationTask]:
    """Replicates ``first_rep .. first_rep + reps - 1``; seeds depend only on ``(seed, scenario, rep)``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    tasks = []
    for rep in range(first_rep, first_rep + reps):
        data_seed, fit_seed = np.random.SeedSequence([seed, SCENARIOS.index(scenario), rep]).generate_state(2)
        tasks.append(CalibrationTask(rep, int(data_seed), int(fit_seed), scenario))
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


def _p_value(stat: dict[str, float]) -> float:
    """The p-value the report prints: two-sided where the check has one, else the upper tail."""
    return float(stat.get("ppp_two_sided", stat["ppp"]))


def run_replicate(task: CalibrationTask) -> list[dict]:
    """Fit and check every outcome of one simulated flagship dataset without selection.

    Returns
    -------
    list of dict
        One row per outcome and statistic: ``rep, data_seed, outcome, k, statistic, p_value,
        failed_gates, retried, error``; a fit that raises gives one row with the error (never dropped).
    """
    sim = simulate_dataset(task.data_seed, omit_probability=0.0)
    outlier = ""
    if task.scenario == "outlier":
        arms, outlier = shift_one_study(sim.arms, np.random.default_rng([task.data_seed, 1]))
        sim = dataclasses.replace(sim, arms=arms)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset, table = _load(sim, Path(tmp))
        for outcome in dataset.outcomes:
            k = len(study_effects(table, outcome))
            if k < MIN_K:
                continue
            base = {"scenario": task.scenario, "rep": task.rep, "data_seed": task.data_seed, "outcome": outcome}
            base |= {"k": k, "outlier_study": outlier}
            try:
                fit = fit_arm_level(dataset, outcome, seed=task.fit_seed, table=table)
                check = arm_posterior_predictive_check(fit, dataset, seed=task.fit_seed)
                loo = arm_loo_pit(fit, dataset, seed=task.fit_seed)
            except Exception as exc:  # noqa: BLE001 - a failing fit is a result of the study, never dropped
                rows.append(base | {"statistic": "", "p_value": np.nan, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            gates = {"failed_gates": not fit.converged, "retried": bool(fit.retried), "error": ""}
            for name, stat in check.statistics.items():
                rows.append(base | {"statistic": name, "p_value": _p_value(stat)} | gates)
            found = loo.most_outlying == outlier
            rows.append(base | {"statistic": "loo_outlier", "p_value": loo.p_adjusted, "found_outlier": found} | gates)
    return rows


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Flag rate of each statistic in each scenario at each nominal level, with its replicate-clustered MC SE.

    In the ``null`` scenario the flag rate is the false-alarm rate, in ``outlier`` the power.

    Returns
    -------
    pandas.DataFrame
        One row per scenario and statistic: ``scenario, statistic, n_checks, n_datasets``, ``rate_<level>`` and
        ``rate_<level>_mcse`` for every level of :data:`NOMINAL_LEVELS`, and the mean and SD of the
        p-values (0.5 and 0.289 for a uniform p).
    """
    ok = rows[rows["statistic"].astype(str) != ""]
    if "scenario" not in ok:
        ok = ok.assign(scenario="null")
    out = []
    for (scenario, name), part in ok.groupby(["scenario", "statistic"], sort=False):
        row: dict[str, float | int | str] = {
            "scenario": str(scenario),
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


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (rates in %, Monte Carlo SE in brackets)."""
    levels = " | ".join(f"flagged at {level:g} (MCSE)" for level in NOMINAL_LEVELS)
    lines = [
        f"| scenario | statistic | checks (datasets) | {levels} | mean p | SD of p |",
        "|---|---|---|" + "---|" * len(NOMINAL_LEVELS) + "---|---|",
    ]
    for _, r in summary.iterrows():
        rates = " | ".join(
            f"{100 * r[f'rate_{level:g}']:.1f}% ({100 * r[f'rate_{level:g}_mcse']:.1f})" for level in NOMINAL_LEVELS
        )
        counts = f"{r['n_checks']} ({r['n_datasets']})"
        lines.append(
            f"| {r['scenario']} | {r['statistic']} | {counts} | {rates} | {r['p_mean']:.3f} | {r['p_sd']:.3f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.studies.calibration", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="simulated datasets without misfit (null)")
    parser.add_argument("--reps-outlier", type=int, default=0, help="simulated datasets with one outlying study")
    parser.add_argument("--first-rep", type=int, default=0, help="number of the first replicate (continue a run)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="master seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--batch", type=int, default=20, help="replicates between rewrites of the outputs")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of calibration.json/.csv")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: run the replicates in batches, rewrite the outputs after each batch, print the table."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.reps < 1 or args.jobs < 1 or args.batch < 1:
        parser.error("--reps, --jobs and --batch must be >= 1")
    null = make_tasks(args.reps, args.seed, args.first_rep)
    tasks = interleave([null, make_tasks(args.reps_outlier, args.seed, args.first_rep, "outlier")])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict] = []
    for lo in range(0, len(tasks), args.batch):
        rows += [r for chunk in map_tasks(run_replicate, tasks[lo : lo + args.batch], jobs=args.jobs) for r in chunk]
        frame = pd.DataFrame(rows)
        summary = summarise(frame)
        write_csv(args.out_dir / "calibration.csv", frame)
        payload = {
            "provenance": "simulated",
            "description": __doc__.split("\n\n")[0],
            "complete": lo + args.batch >= len(tasks),
            "settings": {
                "reps_planned": {"null": args.reps, "outlier": args.reps_outlier},
                "reps_done": frame.groupby("scenario")["rep"].nunique().to_dict(),
                "outlier_shift_sd": OUTLIER_SHIFT,
                "first_rep": args.first_rep,
                "seed": args.seed,
                "design": "flagship design, no selection (omit_probability=0), default model",
                "min_k": MIN_K,
                "nominal_levels": list(NOMINAL_LEVELS),
            },
            "runtime_seconds": round(time.perf_counter() - start, 1),
            "summary": summary.to_dict(orient="records"),
            "markdown": markdown_table(summary),
        }
        write_json(args.out_dir / "calibration.json", payload)
        print(f"  replicate {min(lo + args.batch, len(tasks))}/{len(tasks)}", file=sys.stderr, flush=True)
    print("SIMULATED data.\n" + payload["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
