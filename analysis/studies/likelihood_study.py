"""Which likelihood should be the default for arm-level SMD data? A simulation study on two designs.

Candidates, all fitted to the same loaded dataset under the same priors (the dataset's default
:class:`~models.priors.PriorSet`, :func:`models.priors.default_priors`):

- ``normal-LS``: Hedges' g with metafor's large-sample variance, comparisons of a study collapsed by
  GLS (:func:`analysis.dataset.effects.study_effects`), exact quadrature engine
  (:func:`analysis.fitting.random_effects.fit_random_effects`, ``engine="exact"``);
- ``normal-AV``: the same with metafor's ``vtype="AV"`` variance (the outcome's sample-size-weighted
  mean g in every variance and shared-control covariance, ``compute_effects(vtype="AV")``);
- ``arm``: the exact likelihood of the arm summaries, NUTS
  (:func:`analysis.fitting.arm_level.fit_arm_level`, whatever model that public function fits);
- ``normal-multilevel``: :func:`analysis.fitting.multilevel.fit_multilevel`, only if that module
  exists (:func:`available_candidates`).

Designs:

- ``flagship``: each replicate is :func:`analysis.dataset.simulate.simulate_dataset` (its own seed,
  ``omit_probability=0``: every planned Tb_N result is reported, no selection) written to a
  temporary folder and read back with :func:`analysis.dataset.load.load_dataset`, i.e. exactly
  what a user would analyse; every outcome is fitted. Truth of mu: the mean true effect
  ``truth.json["study_effects"]`` of the studies that report the outcome (the outcome subsets do
  not average the moderator contributions to zero). Truth of tau: the design's between-study SD
  of those studies, ``sqrt(tau_residual^2 + s_c^2)`` with ``s_c^2`` the sample variance of their
  fixed moderator contributions; the realised SD of their true effects is kept in the CSV
  (``tau_realised``) for reference.
- ``large-k``: :data:`LARGE_K`, 30 studies with 1-3 treatment arms sharing one control arm and 5-10
  animals per arm, true comparison SMDs ``delta_ij = mu + u_i + w_ij`` with ``u_i ~ N(0, tau^2)``,
  ``w_ij ~ N(0, omega^2)``, ``mu = 1.5``, ``tau = 0.5``, ``omega = 0.2``, simulated animal by
  animal (normal within-arm data, study-specific SD and level as in
  :func:`analysis.studies.simulation_study.simulate_meta_analysis`, which only makes two-arm
  studies), written and loaded as a dataset. The arm structure and sizes are fixed by
  ``design_seed`` (a design, like the flagship's); effects and animals are redrawn per replicate.
  Truth: ``mu`` and ``tau``.

Per design, outcome and candidate (:func:`summarise`): mean error of the benefit-oriented
posterior mean of mu (bias) with its Monte Carlo SE, RMSE, coverage of the 95% equal-tailed
interval with its MC SE, mean interval width, the same for tau (secondary), the share of NUTS fits
that fail a convergence gate after the automatic retry (never dropped), the share of fits that
raised an error, and the median CPU seconds per fit. :func:`verdict` applies the issue's criterion
(every outcome: ``|bias of mu| <= 0.05`` and coverage ``>= 0.93``; then RMSE, width, cost).

Run ``python -m analysis.studies.likelihood_study [--reps N] [--seed S] [--jobs J]
[--design flagship|large-k|both]``; writes ``reports/likelihood_study.json`` (settings, summary,
verdict, Markdown table) and ``reports/likelihood_study.csv`` (one row per fit), rewritten after
every ``--batch`` replicates (the designs interleaved), so an interrupted run leaves a labelled
partial result (``"complete": false``, ``reps_done``). All data are SIMULATED. Results do not
depend on ``--jobs`` (every replicate carries its own seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.config import REPORTS_DIR
from analysis.dataset import simulate_design as D
from analysis.dataset.effects import EffectTable, compute_effects, study_effects
from analysis.dataset.load import Dataset, load_dataset
from analysis.dataset.simulate import SimulatedDataset, simulate_dataset, write_dataset
from analysis.fitting.arm_level import fit_arm_level
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.report.files import write_csv, write_json
from analysis.results.random_effects import MetaAnalysisResult
from analysis.studies.parallel import interleave, map_tasks
from analysis.studies.selection_power import _load, _seed_clustered
from models.priors import default_priors

__all__ = [
    "CANDIDATES",
    "DESIGNS",
    "LARGE_K",
    "LargeKDesign",
    "ReplicateTask",
    "available_candidates",
    "flagship_truth",
    "make_tasks",
    "markdown_table",
    "run_replicate",
    "simulate_large_k",
    "summarise",
    "verdict",
]

#: Every candidate likelihood, in table order.
CANDIDATES: tuple[str, ...] = ("normal-LS", "normal-AV", "arm", "normal-multilevel")
#: Candidates fitted without NUTS (no convergence gates, no Monte Carlo error).
EXACT_CANDIDATES: tuple[str, ...] = ("normal-LS", "normal-AV")
DESIGNS: tuple[str, ...] = ("flagship", "large-k")
DEFAULT_SEED = 20251202
DEFAULT_REPS = 200
#: Outcomes with fewer reporting studies are not analysed (none in either design).
MIN_K = 3
#: The issue's criterion: per outcome, |mean error of mu| <= MAX_ABS_BIAS and coverage >= MIN_COVERAGE.
MAX_ABS_BIAS = 0.05
MIN_COVERAGE = 0.93
_VTYPE = {"normal-LS": "LS", "normal-AV": "AV", "arm": "LS", "normal-multilevel": "LS"}


@dataclass(frozen=True)
class LargeKDesign:
    """The larger-k design: studies with 1..arms_max treatment arms sharing a control arm."""

    k: int = 30
    n_min: int = 5
    n_max: int = 10
    arms_max: int = 3
    mu: float = 1.5
    tau: float = 0.5
    omega: float = 0.2
    design_seed: int = 20251203


LARGE_K = LargeKDesign()


@dataclass(frozen=True)
class ReplicateTask:
    """One replicate: design, replicate number, its seeds, the candidates and the NUTS settings."""

    design: str
    rep: int
    data_seed: int
    fit_seed: int
    candidates: tuple[str, ...]
    sampler: SamplerSettings | None = None


def available_candidates() -> tuple[str, ...]:
    """:data:`CANDIDATES` without ``normal-multilevel`` unless :mod:`analysis.fitting.multilevel` exists."""
    has_multilevel = importlib.util.find_spec("analysis.fitting.multilevel") is not None
    return tuple(c for c in CANDIDATES if c != "normal-multilevel" or has_multilevel)


def make_tasks(
    design: str,
    reps: int,
    seed: int,
    candidates: Sequence[str],
    sampler: SamplerSettings | None = None,
    first_rep: int = 0,
) -> list[ReplicateTask]:
    """Tasks of replicates ``first_rep, ..., first_rep + reps - 1`` of ``design``.

    The seeds depend only on ``(seed, design, rep)``, so a run of replicates 100-199 continues a run
    of replicates 0-99 exactly (see ``--first-rep`` and ``--combine``).
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    tasks = []
    for rep in range(first_rep, first_rep + reps):
        data_seed, fit_seed = np.random.SeedSequence([seed, DESIGNS.index(design), rep]).generate_state(2)
        tasks.append(ReplicateTask(design, rep, int(data_seed), int(fit_seed), tuple(candidates), sampler))
    return tasks


# --- truth -----------------------------------------------------------------------------------------


def flagship_truth(truth: dict, outcome: str, reporting: Sequence[str]) -> dict[str, float]:
    """True mu and tau of one outcome of a simulated flagship dataset (benefit-oriented mu).

    Parameters
    ----------
    truth : dict
        ``truth.json`` of :func:`analysis.dataset.simulate.simulate_dataset`.
    outcome : str
        Outcome id.
    reporting : sequence of str
        Studies that report the outcome.

    Returns
    -------
    dict
        ``mu_true`` (mean true study effect of the reporting studies), ``tau_true``
        (``sqrt(tau_residual^2 + s_c^2)``, ``s_c^2`` the sample variance of their moderator
        contributions), ``tau_realised`` (sample SD of their true effects), ``mu_population``
        and ``tau_population`` (the design's marginal values); effects times the outcome's direction.
    """
    d = truth["direction"][outcome]
    effects = np.array([d * truth["study_effects"][s][outcome] for s in reporting])
    contrib = np.array([truth["moderator_contributions"][s] for s in reporting])
    return {
        "mu_true": float(effects.mean()),
        "tau_true": float(np.sqrt(truth["tau_residual"][outcome] ** 2 + contrib.var(ddof=1))),
        "tau_realised": float(effects.std(ddof=1)),
        "mu_population": d * truth["mu"][outcome],
        "tau_population": truth["tau"][outcome],
    }


# --- the larger-k design ---------------------------------------------------------------------------


def _large_k_layout(design: LargeKDesign) -> list[list[int]]:
    """Per study the arm sizes, control first (fixed by ``design_seed``)."""
    rng = np.random.default_rng(design.design_seed)
    arms = rng.integers(1, design.arms_max + 1, design.k)
    return [list(rng.integers(design.n_min, design.n_max + 1, j + 1)) for j in arms]


def _large_k_toml(seed: int) -> str:
    return (
        'name = "large_k"\ntitle = "Larger-k simulation design (SIMULATED)"\nprovenance = "simulated"\n'
        'citation = "SIMULATED by analysis.studies.likelihood_study"\neffect_measure = "SMD"\n'
        f'seed = {seed}\n\n[outcomes.y]\nlabel = "Simulated outcome"\nunit = "a.u."\ndirection = 1\n'
    )


def simulate_large_k(seed: int, design: LargeKDesign = LARGE_K) -> SimulatedDataset:
    """Simulate one meta-analysis of the larger-k design, animal by animal.

    Parameters
    ----------
    seed : int
        Seed of the effects and animals (the arm layout is fixed by ``design.design_seed``).
    design : LargeKDesign
        True parameters and design.

    Returns
    -------
    SimulatedDataset
        One outcome ``y`` (direction 1); ``truth`` holds ``mu``, ``tau``, ``omega``, the study
        effects ``theta`` and the comparison effects ``delta``.
    """
    rng = np.random.default_rng(seed)
    rows, theta, delta = [], {}, {}
    for i, sizes in enumerate(_large_k_layout(design)):
        study = f"L{i + 1:02d}"
        theta[study] = design.mu + design.tau * rng.standard_normal()
        sigma = np.exp(rng.normal(0.0, 1.0))  # arbitrary units per study
        level = rng.normal(10.0, 3.0) * sigma
        for j, n in enumerate(sizes):
            arm = "control" if j == 0 else f"t{j}"
            effect = 0.0 if j == 0 else theta[study] + design.omega * rng.standard_normal()
            if j:
                delta[f"{study}/{arm}"] = effect
            animals = level + effect * sigma + sigma * rng.standard_normal(n)
            rows.append(
                {
                    "study": study,
                    "arm": arm,
                    "role": "control" if j == 0 else "treatment",
                    "outcome": "y",
                    "mean": animals.mean(),
                    "sd": animals.std(ddof=1),
                    "sem": np.nan,
                    "n": n,
                    "control_arm": None if j == 0 else "control",
                    "unit": "a.u.",
                    "site": "",
                    "source": "simulated",
                }
            )
    truth = dataclasses.asdict(design) | {"seed": seed, "theta": theta, "delta": delta}
    studies = pd.DataFrame({"study": list(theta)})
    return SimulatedDataset(_large_k_toml(seed), studies, pd.DataFrame(rows), truth)


def _large_k_truth(truth: dict) -> dict[str, float]:
    theta = np.array(list(truth["theta"].values()))
    return {
        "mu_true": truth["mu"],
        "tau_true": truth["tau"],
        "tau_realised": float(theta.std(ddof=1)),
        "mu_population": truth["mu"],
        "tau_population": truth["tau"],
    }


# --- fitting ---------------------------------------------------------------------------------------


def _fit(
    candidate: str, dataset: Dataset, outcome: str, table: EffectTable, seed: int, sampler: SamplerSettings | None
) -> MetaAnalysisResult:
    priors = default_priors(dataset.effect_measure)
    if candidate in EXACT_CANDIDATES:
        return fit_random_effects(dataset, outcome, engine="exact", priors=priors, table=table)
    if candidate == "arm":
        return fit_arm_level(dataset, outcome, priors=priors, seed=seed, sampler=sampler, table=table)
    if candidate == "normal-multilevel":
        from analysis.fitting.multilevel import fit_multilevel  # optional module (see available_candidates)

        # its exact quadrature engine where the function offers one (as the other normal candidates)
        engine = {"engine": "exact"} if "engine" in inspect.signature(fit_multilevel).parameters else {}
        return fit_multilevel(dataset, outcome, priors=priors, seed=seed, sampler=sampler, table=table, **engine)
    raise ValueError(f"unknown candidate {candidate!r}; one of {CANDIDATES}")


def _fit_columns(
    candidate: str, dataset: Dataset, outcome: str, table: EffectTable, seed: int, sampler: SamplerSettings | None
) -> dict:
    """Benefit-oriented summaries of mu, tau, convergence and CPU time of one fit (errors recorded, not raised)."""
    clock = (time.perf_counter(), time.process_time())
    try:
        result = _fit(candidate, dataset, outcome, table, seed, sampler)
    except Exception as exc:  # noqa: BLE001 - a failing fit is a result of the study, never dropped
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "failed_gates": True}
    out = {"seconds": time.perf_counter() - clock[0], "cpu_seconds": time.process_time() - clock[1], "error": ""}
    d = dataset.outcomes[outcome].direction
    mu, tau = result.summaries["mu"], result.summaries["tau"]
    lo, hi = sorted((d * mu["q025"], d * mu["q975"]))
    out |= {"mu_mean": d * mu["mean"], "mu_q025": lo, "mu_q975": hi}
    out |= {"tau_mean": tau["mean"], "tau_q025": tau["q025"], "tau_q975": tau["q975"], "engine": result.engine}
    omega = result.summaries.get("omega", {})  # multilevel models only
    out |= {f"omega_{q}": omega.get(q, np.nan) for q in ("mean", "q025", "q975")}
    diag = result.diagnostics
    out |= {
        "failed_gates": bool(diag is not None and not diag.passed),
        "retried": bool(result.retried) if diag is not None else False,
        "divergences": diag.divergences if diag is not None else np.nan,
        "r_hat_max": diag.r_hat_max if diag is not None else np.nan,
        "ess_bulk_min": diag.ess_bulk_min if diag is not None else np.nan,
    }
    return out


def _replicate_data(task: ReplicateTask, folder: Path) -> tuple[Dataset, dict[str, dict[str, float]]]:
    """The loaded dataset of a replicate and the truth per analysed outcome."""
    if task.design == "flagship":
        sim = simulate_dataset(task.data_seed, omit_probability=0.0)
        dataset, table = _load(sim, folder)
        truths = {}
        for outcome in dataset.outcomes:
            reporting = list(study_effects(table, outcome)["study"])
            if len(reporting) >= MIN_K:
                truths[outcome] = flagship_truth(sim.truth, outcome, reporting) | {"k": len(reporting)}
        return dataset, truths
    sim = simulate_large_k(task.data_seed)
    dataset = load_dataset(write_dataset(sim, folder / "large_k"))
    return dataset, {"y": _large_k_truth(sim.truth) | {"k": LARGE_K.k}}


def run_replicate(task: ReplicateTask) -> list[dict]:
    """Simulate one dataset of ``task.design`` and fit every analysed outcome with every candidate.

    Parameters
    ----------
    task : ReplicateTask
        Design, replicate, seeds, candidates and NUTS settings (``None``: each fitting function's default).

    Returns
    -------
    list of dict
        One row per outcome and candidate: ``design, rep, data_seed, outcome, candidate, k``, the
        truth (:func:`flagship_truth`), the benefit-oriented ``mu_mean, mu_q025, mu_q975``, ``tau_*``,
        ``omega_*`` (multilevel models; NaN otherwise),
        ``failed_gates`` (a NUTS fit failing a gate after its retry, or an error), ``retried``,
        ``divergences``, ``r_hat_max``, ``ess_bulk_min``, ``seconds``, ``cpu_seconds`` and ``error``.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="evmeta-likelihood-study-") as tmp:
        dataset, truths = _replicate_data(task, Path(tmp))
        tables = {vtype: compute_effects(dataset, vtype=vtype) for vtype in {_VTYPE[c] for c in task.candidates}}
        for outcome, truth in truths.items():
            for candidate in task.candidates:
                row = {"design": task.design, "rep": task.rep, "data_seed": task.data_seed, "outcome": outcome}
                row |= {"candidate": candidate} | truth
                row |= _fit_columns(candidate, dataset, outcome, tables[_VTYPE[candidate]], task.fit_seed, task.sampler)
                rows.append(row)
    return rows


# --- summaries -------------------------------------------------------------------------------------


def _mean_se(x: pd.Series) -> tuple[float, float]:
    x = x.dropna().astype(float)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else np.nan


def _parameter_summary(part: pd.DataFrame, p: str) -> dict[str, float]:
    err = part[f"{p}_mean"] - part[f"{p}_true"]
    covered = ((part[f"{p}_q025"] <= part[f"{p}_true"]) & (part[f"{p}_true"] <= part[f"{p}_q975"])).where(err.notna())
    bias, bias_se = _mean_se(err)
    coverage, coverage_se = _mean_se(covered)
    if len(err.dropna()) > 1 and part["rep"].duplicated().any():  # pooled outcomes: cluster by replicate
        bias, bias_se, _ = _seed_clustered(err, part["rep"])
        coverage, coverage_se, _ = _seed_clustered(covered, part["rep"])
    return {
        f"{p}_bias": bias,
        f"{p}_bias_mcse": bias_se,
        f"{p}_rmse": float(np.sqrt((err**2).mean())),
        f"{p}_coverage": coverage,
        f"{p}_coverage_mcse": coverage_se,
        f"{p}_width": float((part[f"{p}_q975"] - part[f"{p}_q025"]).mean()),
    }


def _one_summary(part: pd.DataFrame) -> dict:
    ok = part["error"].astype("string").fillna("").eq("")
    out = {"fits": len(part), "share_error": float((~ok).mean())}
    out |= _parameter_summary(part[ok], "mu") | _parameter_summary(part[ok], "tau")
    nuts = part["engine"].eq("nuts") | ~ok
    out["share_failed_gates"] = float(part.loc[nuts, "failed_gates"].astype(bool).mean()) if nuts.any() else np.nan
    out["share_retried"] = float(part.loc[nuts & ok, "retried"].astype(bool).mean()) if (nuts & ok).any() else np.nan
    out["cpu_seconds_median"] = float(part.loc[ok, "cpu_seconds"].median())
    return out


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Bias, RMSE, coverage, width (mu and tau), failures and CPU time per design, outcome and candidate.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of :func:`run_replicate` (any number of replicates).

    Returns
    -------
    pandas.DataFrame
        One row per ``design, outcome, candidate`` plus, per design with several outcomes, an
        ``outcome == "all"`` row pooling them (Monte Carlo SEs clustered by replicate, as the
        outcomes of one dataset are correlated). ``*_bias`` is the mean error of the posterior
        mean, ``*_coverage`` that of the 95% equal-tailed interval, each with its MC SE
        (``*_mcse``); fits that raised an error are counted in ``share_error`` and left out of the
        other columns; ``share_failed_gates`` is over NUTS fits and errors.
    """
    out = []
    for (design, candidate), part in rows.groupby(["design", "candidate"], sort=False):
        outcomes = list(dict.fromkeys(part["outcome"]))
        for outcome in outcomes + (["all"] if len(outcomes) > 1 else []):
            sub = part if outcome == "all" else part[part["outcome"] == outcome]
            out.append({"design": design, "outcome": outcome, "candidate": candidate} | _one_summary(sub))
    table = pd.DataFrame(out)
    order = {c: i for i, c in enumerate(CANDIDATES)}
    outcome_order = {o: i for i, o in enumerate([*D.OUTCOMES, "y", "all"])}
    keys = table.assign(_d=table["design"].map(DESIGNS.index), _o=table["outcome"].map(outcome_order))
    keys["_c"] = table["candidate"].map(order)
    return table.loc[keys.sort_values(["_d", "_o", "_c"], kind="stable").index].reset_index(drop=True)


def verdict(summary: pd.DataFrame) -> list[dict]:
    """The issue's criterion per candidate, over every outcome of every design in ``summary``.

    A candidate passes if for every outcome (``all`` rows excluded) ``|mu_bias| <= 0.05`` and
    ``mu_coverage >= 0.93``; candidates are ranked by passing first, then mean RMSE of mu, mean
    width, median CPU seconds.

    Returns
    -------
    list of dict
        Per candidate, best first: ``candidate, passes, failing`` (outcomes that fail, with the
        reason), ``mean_mu_rmse``, ``mean_mu_width``, ``cpu_seconds_median``.
    """
    per = summary[summary["outcome"] != "all"]
    out = []
    for candidate, part in per.groupby("candidate", sort=False):
        failing = []
        for _, r in part.iterrows():
            reasons = [f"bias {r['mu_bias']:+.3f}"] if not abs(r["mu_bias"]) <= MAX_ABS_BIAS else []
            reasons += [f"coverage {r['mu_coverage']:.3f}"] if not r["mu_coverage"] >= MIN_COVERAGE else []
            if reasons:
                failing.append(f"{r['design']}/{r['outcome']}: {', '.join(reasons)}")
        out.append(
            {
                "candidate": candidate,
                "passes": not failing,
                "failing": failing,
                "mean_mu_rmse": float(part["mu_rmse"].mean()),
                "mean_mu_width": float(part["mu_width"].mean()),
                "cpu_seconds_median": float(part["cpu_seconds_median"].median()),
            }
        )
    return sorted(out, key=lambda v: (not v["passes"], v["mean_mu_rmse"], v["mean_mu_width"], v["cpu_seconds_median"]))


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (MC SE in brackets; coverage in %)."""
    lines = [
        "| design | outcome | likelihood | bias mu (MCSE) | RMSE mu | cover mu % (MCSE) | width mu "
        "| bias tau | cover tau % | width tau | failed gates % | errors % | CPU s/fit (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        gates = "–" if np.isnan(r["share_failed_gates"]) else f"{100 * r['share_failed_gates']:.1f}"
        lines.append(
            f"| {r['design']} | {r['outcome']} | {r['candidate']} | {r['mu_bias']:+.3f} ({r['mu_bias_mcse']:.3f}) "
            f"| {r['mu_rmse']:.3f} | {100 * r['mu_coverage']:.1f} ({100 * r['mu_coverage_mcse']:.1f}) "
            f"| {r['mu_width']:.2f} | {r['tau_bias']:+.3f} | {100 * r['tau_coverage']:.1f} | {r['tau_width']:.2f} "
            f"| {gates} | {100 * r['share_error']:.1f} | {r['cpu_seconds_median']:.2f} |"
        )
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------------


def _progress(done: int, total: int) -> None:
    print(f"  replicate {done}/{total}", file=sys.stderr, flush=True)


def _sampler(args: argparse.Namespace) -> SamplerSettings | None:
    if args.draws is None and args.chains is None and args.tune is None:
        return None
    base = SamplerSettings(target_accept=args.target_accept)
    return dataclasses.replace(
        base, draws=args.draws or base.draws, tune=args.tune or base.tune, chains=args.chains or base.chains
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.studies.likelihood_study", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="replicates of the flagship design")
    parser.add_argument("--reps-large-k", type=int, default=None, help="replicates of the larger-k design (--reps)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="master seed")
    parser.add_argument(
        "--first-rep", type=int, default=0, help="number of the first flagship replicate (continue an earlier run)"
    )
    parser.add_argument("--first-rep-large-k", type=int, default=None, help="first larger-k replicate (--first-rep)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--design", choices=[*DESIGNS, "both"], default="both")
    parser.add_argument("--candidates", nargs="+", choices=CANDIDATES, default=None, help="default: all available")
    parser.add_argument("--draws", type=int, default=None, help="NUTS draws per chain (default: each fit's own)")
    parser.add_argument("--tune", type=int, default=None, help="NUTS tuning steps per chain")
    parser.add_argument("--chains", type=int, default=None, help="NUTS chains")
    parser.add_argument("--target-accept", type=float, default=0.99, help="with --draws/--tune/--chains")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of likelihood_study.json/.csv")
    parser.add_argument("--batch", type=int, default=10, help="replicates between rewrites of the outputs")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        help="instead of running: summarise the rows of earlier runs (likelihood_study.csv files of the same --seed, "
        "e.g. one per candidate) into --out-dir",
    )
    return parser


def combine_runs(paths: Sequence[Path]) -> tuple[pd.DataFrame, dict]:
    """Rows of several runs (same master seed; disjoint candidates or replicates) and their summary payload.

    Raises
    ------
    ValueError
        If two runs hold the same replicate of the same candidate and design.
    """
    parts = [pd.read_csv(path, keep_default_na=False, na_values=[""]) for path in paths]
    seen: dict[tuple, Path] = {}
    for path, part in zip(paths, parts, strict=True):
        for key in part[["design", "candidate", "rep"]].drop_duplicates().itertuples(index=False):
            if tuple(key) in seen:
                raise ValueError(f"replicate {tuple(key)} is in both {seen[tuple(key)]} and {path}")
            seen[tuple(key)] = path
    rows = pd.concat(parts, ignore_index=True)
    summary = summarise(rows)
    done = {f"{d}/{c}": int(n) for (d, c), n in rows.groupby(["design", "candidate"])["rep"].nunique().items()}
    payload = {
        "provenance": "simulated",
        "description": __doc__.split("\n\n")[0],
        "complete": None,
        "settings": {"combined_from": sorted({str(p) for p in paths}), "reps_done": done},
        "summary": summary.to_dict(orient="records"),
        "verdict": verdict(summary),
        "markdown": markdown_table(summary),
    }
    return rows, payload


def _payload(args: argparse.Namespace, tasks: list[ReplicateTask], rows: pd.DataFrame, clock: tuple) -> dict:
    summary = summarise(rows)
    done = rows.groupby("design")["rep"].nunique().to_dict()
    planned = {d: sum(t.design == d for t in tasks) for d in dict.fromkeys(t.design for t in tasks)}
    sampler = tasks[0].sampler
    return {
        "provenance": "simulated",
        "description": __doc__.split("\n\n")[0],
        "complete": done == planned,
        "settings": {
            "reps_planned": planned,
            "reps_done": done,
            "seed": args.seed,
            "jobs": args.jobs,
            "candidates": list(tasks[0].candidates),
            "multilevel_available": "normal-multilevel" in available_candidates(),
            "sampler": dataclasses.asdict(sampler) if sampler else "each fitting function's default",
            "large_k": dataclasses.asdict(LARGE_K),
            "flagship_omit_probability": 0.0,
            "min_k": MIN_K,
            "criterion": {"max_abs_bias_mu": MAX_ABS_BIAS, "min_coverage_mu": MIN_COVERAGE},
            "truth": {
                "mu": "flagship: mean true effect of the reporting studies; large-k: mu",
                "tau": "flagship: sqrt(tau_residual^2 + sample variance of the reporting studies' moderator "
                "contributions); large-k: tau",
            },
            "sign": "mu benefit-oriented (natural value x direction)",
        },
        "runtime": {
            "seconds": round(time.perf_counter() - clock[0], 1),
            "cpu_seconds_main_process": round(time.process_time() - clock[1], 1),
        },
        "summary": summary.to_dict(orient="records"),
        "verdict": verdict(summary),
        "markdown": markdown_table(summary),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: run the replicates in batches, rewrite the JSON and CSV after each batch, print the table."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.combine:
        rows, payload = combine_runs(args.combine)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(args.out_dir / "likelihood_study.csv", rows)
        write_json(args.out_dir / "likelihood_study.json", payload)
        print("SIMULATED data.\n" + payload["markdown"])
        return 0
    if args.reps < 1 or args.jobs < 1 or args.batch < 1:
        parser.error("--reps, --jobs and --batch must be >= 1")
    candidates = tuple(args.candidates or available_candidates())
    sampler = _sampler(args)
    designs = DESIGNS if args.design == "both" else (args.design,)
    reps = {"flagship": args.reps, "large-k": args.reps_large_k or args.reps}
    first = {"flagship": args.first_rep, "large-k": args.first_rep_large_k or args.first_rep}
    tasks = interleave([make_tasks(d, reps[d], args.seed, candidates, sampler, first[d]) for d in designs])
    clock = (time.perf_counter(), time.process_time())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for lo in range(0, len(tasks), args.batch):
        batch = tasks[lo : lo + args.batch]
        rows += [row for chunk in map_tasks(run_replicate, batch, jobs=args.jobs) for row in chunk]
        payload = _payload(args, tasks, pd.DataFrame(rows), clock)
        write_csv(args.out_dir / "likelihood_study.csv", pd.DataFrame(rows))
        write_json(args.out_dir / "likelihood_study.json", payload)
        _progress(lo + len(batch), len(tasks))
    print("SIMULATED data.\n" + payload["markdown"])
    for v in payload["verdict"]:
        print(f"{v['candidate']}: passes={v['passes']} rmse={v['mean_mu_rmse']:.3f} failing={v['failing']}")
    print(f"{len(tasks)} replicates in {payload['runtime']['seconds'] / 60:.1f} min; wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
