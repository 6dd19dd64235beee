"""Simulation study: normal likelihood on Hedges' g versus the exact arm-level likelihood (issue 7).

Each replicate simulates one meta-analysis *animal by animal*: ``k`` two-arm studies with true
SMDs ``theta_i ~ N(mu, tau^2)``, a study-specific within-group SD ``sigma_i`` and control mean
(both irrelevant to the SMD, drawn only to make the units differ between studies), and
``n`` animals per arm (exactly 5, or independently 5–10 per arm). Both likelihoods are fitted
to the same summaries under the same priors, ``mu ~ N(0, 3^2)`` and ``tau ~ HalfNormal(1)``:

- normal: Hedges' g with metafor's "LS" variance (:func:`analysis.dataset.smd.hedges_g`), posterior by
  the exact quadrature engine (:func:`models.exact.posterior.exact_posterior`: the normal model's exact
  posterior, no Monte Carlo error);
- arm: :mod:`models.arm_level` with NUTS; the graph and the NUTS step are compiled once per
  scenario and worker, and each replicate swaps its data in with ``pm.set_data``.

Reported per scenario and likelihood: coverage of the 95% equal-tailed intervals of ``mu`` and
``tau`` (with its Monte Carlo SE), bias and RMSE of the posterior mean and median, mean interval
width, and for NUTS the share of fits with a divergence or failing r_hat <= 1.01.

Run ``python -m analysis.studies.simulation_study [--reps N] [--seed S] [--out FILE] [--jobs J]``;
results do not depend on ``--jobs`` (every replicate has its own seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm

from analysis.atomic import write_text_atomic
from analysis.config import REPORTS_DIR
from analysis.dataset.smd import hedges_g
from analysis.results.summaries import summarize_draws
from analysis.studies.parallel import ClientLike, map_tasks
from models.arm_level import ArmSummaries, arm_summaries, build_arm_level_model
from models.exact.posterior import exact_posterior
from models.priors import DEFAULT_MU_PRIOR, DEFAULT_TAU_PRIOR

__all__ = ["SCENARIOS", "Scenario", "run_study", "simulate_meta_analysis", "summarise"]

DEFAULT_REPS = 100
DEFAULT_SEED = 20250707
DEFAULT_OUT = REPORTS_DIR / "simulation_study.json"
#: NUTS settings of the arm-level fits, chosen for the time budget (~1.7-2 CPU-s per fit, ~12 min
#: for the default 800 fits on 2 idle cores): 2 chains x 500 draws give a bulk ESS of mu and tau
#: of ~300 (median; 5% of fits < 170) and r_hat > 1.01 in ~20% of fits (max ~1.05), i.e. Monte
#: Carlo noise in each interval end point of ~0.01 in probability, small against the +-2 points
#: MC SE of a 100-replicate coverage. target_accept 0.95 (the library default for this model is
#: 0.99, see analysis.fitting.arm_level.DEFAULT_SAMPLER): ~1% of fits have a divergent transition,
#: which the summary reports.
DRAWS, TUNE, CHAINS, TARGET_ACCEPT = 500, 500, 2, 0.95
_CHUNK = 25  # replicates per task (one compile per task)


@dataclass(frozen=True)
class Scenario:
    """One simulation scenario: true mu and tau, k studies, animals per arm drawn from n_min..n_max."""

    name: str
    mu: float
    tau: float
    k: int
    n_min: int
    n_max: int


SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(f"n{lo}-{hi} mu{mu:g} tau{tau:g}", mu, tau, k, lo, hi)
    for lo, hi, k in ((5, 5, 8), (5, 10, 10))
    for mu in (1.0, 2.0)
    for tau in (0.3, 0.6)
)


def simulate_meta_analysis(scenario: Scenario, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Simulate the arm summaries of one meta-analysis of two-arm studies from individual animals.

    Parameters
    ----------
    scenario : Scenario
        True parameters and design.
    rng : numpy.random.Generator
        Seeded generator (the only source of randomness).

    Returns
    -------
    dict of numpy.ndarray
        Per study: ``theta`` (true SMD), ``mean_c, sd_c, n_c, mean_t, sd_t, n_t``.
    """
    k = scenario.k
    theta = scenario.mu + scenario.tau * rng.standard_normal(k)
    sigma = np.exp(rng.normal(0.0, 1.0, k))  # arbitrary units per study
    alpha = rng.normal(10.0, 3.0, k) * sigma
    n_c, n_t = (rng.integers(scenario.n_min, scenario.n_max + 1, k) for _ in range(2))
    out: dict[str, list[float]] = {key: [] for key in ("mean_c", "sd_c", "mean_t", "sd_t")}
    for i in range(k):
        control = alpha[i] + sigma[i] * rng.standard_normal(n_c[i])
        treated = alpha[i] + theta[i] * sigma[i] + sigma[i] * rng.standard_normal(n_t[i])
        for arm, animals in (("c", control), ("t", treated)):
            out[f"mean_{arm}"].append(animals.mean())
            out[f"sd_{arm}"].append(animals.std(ddof=1))
    return {"theta": theta, "n_c": n_c.astype(float), "n_t": n_t.astype(float)} | {
        k_: np.array(v) for k_, v in out.items()
    }


def _arm_data(sim: dict[str, np.ndarray]) -> ArmSummaries:
    """Arm summaries of a simulated meta-analysis: per study a control and a treatment arm."""
    k = sim["n_c"].size

    def pair(control: np.ndarray, treated: np.ndarray) -> np.ndarray:
        return np.column_stack([control, treated]).ravel()  # (control, treatment) per study

    return arm_summaries(
        pair(sim["mean_c"], sim["mean_t"]),
        pair(sim["sd_c"], sim["sd_t"]),
        pair(sim["n_c"], sim["n_t"]),
        np.tile([0.0, 1.0], k),
        np.repeat(np.arange(k), 2),
        np.repeat(np.arange(k), 2),
        study=[f"S{i}" for i in range(k)],
    )


def _normal_fit(sim: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Exact posterior summaries of mu and tau under the normal likelihood on Hedges' g."""
    yi, vi = hedges_g(sim["mean_t"], sim["sd_t"], sim["n_t"], sim["mean_c"], sim["sd_c"], sim["n_c"])
    post = exact_posterior(yi, vi, tau_prior=DEFAULT_TAU_PRIOR, mu_prior=DEFAULT_MU_PRIOR)
    return {p: post.summary(p) for p in ("mu", "tau")}


class ArmFitter:
    """The arm-level model of one layout, compiled once; :meth:`fit` swaps data in with ``pm.set_data``."""

    def __init__(self, sim: dict[str, np.ndarray]) -> None:
        self.model = build_arm_level_model(_arm_data(sim), tau_prior=DEFAULT_TAU_PRIOR, beta_priors=[DEFAULT_MU_PRIOR])
        with self.model:
            self.step = pm.NUTS(target_accept=TARGET_ACCEPT)

    def fit(self, sim: dict[str, np.ndarray], seed: int) -> dict:
        """Posterior summaries of mu and tau and convergence numbers for one replicate."""
        data = _arm_data(sim)
        rng = np.random.default_rng([seed, 1])
        k = data.k
        # PyMC jitters initial points only when it builds the step itself; jitter here instead.
        inits = [
            {
                "mu": rng.uniform(-1, 1),
                "tau": np.exp(rng.uniform(-1, 1)) * 0.5,
                "z": rng.uniform(-1, 1, k),
                "log_sigma": rng.uniform(-0.5, 0.5, k),
            }
            for _ in range(CHAINS)
        ]
        with self.model:
            pm.set_data(
                {
                    "u": data.contrast,
                    "comparison_n": data.comparison_n,
                    "n_before": data.n_before,
                    "group_start": data.group_start,
                    "se_factor": data.se_factor,
                    "arm_n": data.arm_n,
                    "arm_var": data.arm_var,
                    "scale": data.scale,
                }
            )
            idata = pm.sample(
                DRAWS,
                tune=TUNE,
                chains=CHAINS,
                cores=1,
                step=self.step,
                initvals=inits,
                random_seed=seed,
                progressbar=False,
                quiet=True,
                compute_convergence_checks=False,
            )
        post = idata.posterior
        rhat = az.rhat(idata, var_names=["mu", "tau"])
        ess = az.ess(idata, var_names=["mu", "tau"], method="bulk")
        return {
            "mu": summarize_draws(post["mu"].to_numpy()),
            "tau": summarize_draws(post["tau"].to_numpy()),
            "divergences": int(idata.sample_stats["diverging"].sum()),
            "r_hat_max": max(float(rhat["mu"]), float(rhat["tau"])),
            "ess_bulk_min": min(float(ess["mu"]), float(ess["tau"])),
        }


def _replicate_seeds(seed: int, scenario_index: int, rep: int) -> tuple[np.random.Generator, int]:
    """Data generator and NUTS seed of one replicate (independent of how replicates are split into tasks)."""
    data_seq, nuts_seq = np.random.SeedSequence([seed, scenario_index, rep]).spawn(2)
    return np.random.default_rng(data_seq), int(nuts_seq.generate_state(1)[0])


def _elapsed(clock: tuple[float, float]) -> dict[str, float]:
    """Wall-clock and CPU seconds since ``clock = (perf_counter(), process_time())``."""
    return {"seconds": time.perf_counter() - clock[0], "cpu_seconds": time.process_time() - clock[1]}


def run_chunk(scenario_index: int, reps: range, seed: int) -> list[dict]:
    """Simulate and fit replicates ``reps`` of one scenario (one compile); one row per replicate and likelihood."""
    scenario = SCENARIOS[scenario_index]
    fitter, rows = None, []
    for rep in reps:
        rng, nuts_seed = _replicate_seeds(seed, scenario_index, rep)
        sim = simulate_meta_analysis(scenario, rng)
        fitter = fitter or ArmFitter(sim)
        clock = (time.perf_counter(), time.process_time())
        fits = {"normal": _normal_fit(sim) | _elapsed(clock)}
        clock = (time.perf_counter(), time.process_time())
        fits["arm"] = fitter.fit(sim, nuts_seed) | _elapsed(clock)
        for likelihood, fit in fits.items():
            row = {
                "scenario": scenario.name,
                "rep": rep,
                "likelihood": likelihood,
                "mu_true": scenario.mu,
                "tau_true": scenario.tau,
                "seconds": fit["seconds"],
                "cpu_seconds": fit["cpu_seconds"],
            }
            row |= {f"{p}_{stat}": fit[p][stat] for p in ("mu", "tau") for stat in ("mean", "median", "q025", "q975")}
            row |= {key: fit.get(key, np.nan) for key in ("divergences", "r_hat_max", "ess_bulk_min")}
            rows.append(row)
    return rows


def _run_chunk_task(task: tuple[int, range, int]) -> list[dict]:
    return run_chunk(*task)


def summarise(raw: pd.DataFrame) -> pd.DataFrame:
    """Coverage, bias, RMSE and interval width per scenario and likelihood.

    Parameters
    ----------
    raw : pandas.DataFrame
        One row per replicate and likelihood (output of :func:`run_study`).

    Returns
    -------
    pandas.DataFrame
        One row per scenario and likelihood, in scenario order.
    """

    def one(part: pd.DataFrame) -> pd.Series:
        out = {"reps": len(part)}
        for p in ("mu", "tau"):
            truth = part[f"{p}_true"]
            covered = (part[f"{p}_q025"] <= truth) & (truth <= part[f"{p}_q975"])
            out[f"{p}_coverage"] = covered.mean()
            out[f"{p}_coverage_mcse"] = np.sqrt(covered.mean() * (1 - covered.mean()) / len(part))
            out[f"{p}_bias_mean"] = (part[f"{p}_mean"] - truth).mean()
            out[f"{p}_bias_median"] = (part[f"{p}_median"] - truth).mean()
            out[f"{p}_rmse_mean"] = np.sqrt(((part[f"{p}_mean"] - truth) ** 2).mean())
            out[f"{p}_width"] = (part[f"{p}_q975"] - part[f"{p}_q025"]).mean()
        out["share_divergent"] = (part["divergences"] > 0).mean() if part["divergences"].notna().any() else np.nan
        out["share_rhat_gt_1.01"] = (part["r_hat_max"] > 1.01).mean() if part["r_hat_max"].notna().any() else np.nan
        out["seconds_per_fit"] = part["seconds"].mean()
        out["cpu_seconds_per_fit"] = part["cpu_seconds"].mean()
        return pd.Series(out)

    order = {s.name: i for i, s in enumerate(SCENARIOS)}
    table = raw.groupby(["scenario", "likelihood"], sort=False).apply(one, include_groups=False).reset_index()
    table["reps"] = table["reps"].astype(int)
    return table.sort_values(
        ["scenario", "likelihood"], key=lambda c: c.map(order) if c.name == "scenario" else c, kind="stable"
    ).reset_index(drop=True)


def run_study(
    reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED, jobs: int = 2, executor: Executor | ClientLike | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every scenario; returns the replicate rows and their summary (:func:`summarise`).

    Parameters
    ----------
    reps : int
        Replicates per scenario.
    seed : int
        Master seed; the same seed gives the same numbers whatever ``jobs`` is.
    jobs : int
        Worker processes (each fits its NUTS chains in sequence, ``cores=1``).
    executor : concurrent.futures.Executor or dask Client, optional
        Where to run the chunks instead (:func:`analysis.studies.parallel.map_tasks`).
    """
    tasks = [
        (i, range(lo, min(lo + _CHUNK, reps)), seed) for i in range(len(SCENARIOS)) for lo in range(0, reps, _CHUNK)
    ]
    chunks = map_tasks(_run_chunk_task, tasks, executor=executor, jobs=jobs)
    raw = pd.DataFrame([row for chunk in chunks for row in chunk])
    return raw, summarise(raw)


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (coverage in %, MC SE in brackets)."""
    lines = [
        (
            "| scenario | likelihood | cover mu % | cover tau % | bias mu (mean / median) | bias tau (mean / median) "
            "| width mu | width tau | RMSE mu | divergent fits % |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        div = "–" if np.isnan(r["share_divergent"]) else f"{100 * r['share_divergent']:.0f}"
        lines.append(
            f"| {r['scenario']} | {r['likelihood']} | {100 * r['mu_coverage']:.0f} ({100 * r['mu_coverage_mcse']:.0f}) "
            f"| {100 * r['tau_coverage']:.0f} ({100 * r['tau_coverage_mcse']:.0f}) "
            f"| {r['mu_bias_mean']:+.3f} / {r['mu_bias_median']:+.3f} "
            f"| {r['tau_bias_mean']:+.3f} / {r['tau_bias_median']:+.3f} "
            f"| {r['mu_width']:.2f} | {r['tau_width']:.2f} | {r['mu_rmse_mean']:.3f} | {div} |"
        )
    return "\n".join(lines)


def _write(raw: pd.DataFrame, summary: pd.DataFrame, out: Path, meta: dict) -> None:
    """Write ``out`` (JSON: settings, summary, replicates) and ``out`` with suffix .csv (the summary)."""
    payload = {
        "meta": meta,
        "summary": json.loads(summary.to_json(orient="records")),
        "replicates": json.loads(raw.to_json(orient="records")),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(payload, indent=1) + "\n")
    write_text_atomic(out.with_suffix(".csv"), summary.to_csv(index=False, float_format="%.4f"))


def main(argv: list[str] | None = None) -> int:
    """Command line: run the study, write JSON + CSV, print the Markdown table and the runtime."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.studies.simulation_study", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="replicates per scenario")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="master seed")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON output (a .csv summary is written beside it)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.jobs < 1:
        parser.error("--reps and --jobs must be >= 1")
    start = time.perf_counter()
    raw, summary = run_study(args.reps, args.seed, args.jobs)
    seconds = time.perf_counter() - start
    meta = {
        "reps": args.reps,
        "seed": args.seed,
        "jobs": args.jobs,
        "seconds": round(seconds, 1),
        "cpu_seconds_fits": round(float(raw["cpu_seconds"].sum()), 1),
        "scenarios": [asdict(s) for s in SCENARIOS],
        "priors": {"mu": str(DEFAULT_MU_PRIOR), "tau": str(DEFAULT_TAU_PRIOR)},
        "nuts": {"draws": DRAWS, "tune": TUNE, "chains": CHAINS, "target_accept": TARGET_ACCEPT},
        "versions": {"pymc": pm.__version__, "numpy": np.__version__},
    }
    _write(raw, summary, args.out, meta)
    print(markdown_table(summary))
    print(
        f"\n{args.reps} replicates x {len(SCENARIOS)} scenarios in {seconds / 60:.1f} min wall-clock "
        f"({args.jobs} jobs; "
        f"{raw['cpu_seconds'].sum() / 60:.1f} CPU-min in the fits); "
        f"written {args.out} and {args.out.with_suffix('.csv')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
