"""``evmeta run``: the whole analysis of a dataset as cached, parallel per-outcome jobs (no file output).

Per outcome: the random-effects model with NUTS (convergence-gated, retried once) and with
the exact engine (the cross-check); posterior predictive checks; power-scaling and a prior
grid; the comparison with the frequentist DL/REML estimates; subgroups as covariates, one
moderator at a time as the paper did (exact engine); publication bias (model averaging over effect,
heterogeneity and bias: selection models on one-sided p-values, PET/PEESE; exact quadrature)
replacing Egger's test; and study
influence (exact leave-one-study-out refits and PSIS-LOO) replacing leave-one-out.
Each outcome is one job whose rendered
artifacts are cached by content hash (:mod:`analysis.run.cache`); jobs that miss the cache run in
parallel worker processes, fits and figures as separate steps (see :func:`_execute`). The
report module writes the result.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from analysis.checks.calibrated import check_fit
from analysis.checks.compare import COMPARE_COLUMNS, compare_table
from analysis.checks.influence import influence_analysis
from analysis.checks.influence_arm import arm_leave_one_out
from analysis.checks.loo_pit import arm_loo_pit
from analysis.checks.reproduce import reproduce_published
from analysis.checks.reweighting import reweighted_prior_grid
from analysis.checks.risk_of_bias import rob_sensitivity
from analysis.checks.sensitivity import power_scaling, prior_grid, top_level_parameters
from analysis.dataset.effects import EffectTable, compute_effects
from analysis.dataset.load import Dataset, load_dataset
from analysis.dataset.problems import NotApplicable
from analysis.fitting.arm_level import fit_arm_level
from analysis.fitting.meta_regression import fit_subgroups_one_at_a_time
from analysis.fitting.multivariate import rho_within_sensitivity
from analysis.fitting.multivariate_data import default_outcomes
from analysis.fitting.multivariate_structures import fit_multivariate_structures
from analysis.fitting.nuts import compile_seconds
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.fitting.small_study import fit_small_study
from analysis.inference.decision import DEFAULT_DECISION, DecisionSettings, decision_quantities
from analysis.report.artifacts import MultivariateArtifacts, OutcomeArtifacts, RunResult
from analysis.report.files import json_text
from analysis.report.render import build_artifacts, build_multivariate_artifacts
from analysis.results.diagnostics import engine_check
from analysis.results.outcome import OutcomeAnalysis
from analysis.results.random_effects import without_model
from analysis.run import cache
from models.priors import PriorSet, default_priors

Progress = Callable[[str], None]
MULTIVARIATE = "__multivariate__"
#: ``evmeta run --engine``: "nuts" (every analysis) or "exact" (the exact engine only: fast, no NUTS draws).
ENGINES = ("nuts", "exact")


def _silent(message: str) -> None:
    """Default progress callback: report nothing."""


@dataclass(frozen=True)
class OutcomeJob:
    """One outcome's work: picklable, so it runs in a worker process on the dataset loaded once by the parent."""

    outcome: str
    key: str
    seed: int
    dataset: Dataset
    table: EffectTable
    priors: PriorSet
    sampler: SamplerSettings
    kind: str = "outcome"
    engine: str = "nuts"
    decision: DecisionSettings = DEFAULT_DECISION


@dataclass(frozen=True)
class RunPlan:
    """A planned run: the dataset loaded and validated once, its effect table, the jobs and the run key."""

    dataset: Dataset
    table: EffectTable
    jobs: list[OutcomeJob]
    skipped: dict[str, str]
    key: str
    priors: PriorSet
    sampler: SamplerSettings
    seed: int
    engine: str = "nuts"
    notes: tuple[str, ...] = ()


def analyse_outcome(
    dataset: Dataset,
    table: EffectTable,
    outcome: str,
    *,
    priors: PriorSet,
    sampler: SamplerSettings,
    seed: int,
    engine: str = "nuts",
    progressbar: bool = False,
    decision: DecisionSettings = DEFAULT_DECISION,
) -> OutcomeAnalysis:
    """Fit, check and compare one outcome (see the module docstring).

    With ``engine="exact"`` only the exact engine runs: the analyses that need NUTS draws (posterior
    predictive checks, power-scaling, the arm-level likelihood, PSIS-LOO) are
    skipped with that reason. An analysis whose precondition fails on these data (too few studies,
    :class:`~analysis.dataset.problems.NotApplicable`) is skipped with its reason; the run goes on.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    exact = fit_random_effects(dataset, outcome, engine="exact", priors=priors, table=table)
    fits = {"exact engine, normal likelihood (default priors)": exact.to_dict()}
    analysis = OutcomeAnalysis(
        exact=exact, prior_grid=prior_grid(dataset, outcome, table=table), comparison=pd.DataFrame()
    )
    if engine == "nuts":
        _nuts_analyses(
            analysis, dataset, table, outcome, priors=priors, sampler=sampler, seed=seed, progressbar=progressbar
        )
        analysis.primary.decision = decision_quantities(
            analysis.primary, dataset, min_effect=decision.min_effect, planned_n=decision.planned_n, seed=seed
        )
        fits = {"NUTS, normal likelihood (default priors)": analysis.nuts.to_dict()} | fits
        if analysis.arm is not None:
            label = "NUTS, arm-level likelihood (default model)"
            label += "" if analysis.arm.converged else " (FAILED convergence gates)"
            fits = {label: analysis.arm.to_dict()} | fits
    else:
        analysis.skipped["NUTS analyses"] = (
            "the run used the exact engine only (--engine exact): posterior predictive checks, power-scaling, "
            "the arm-level likelihood and PSIS-LOO need NUTS draws"
        )
    studies = analysis.primary.studies
    analysis.comparison = compare_table(fits, frequentist=(studies["yi"].to_numpy(), studies["vi"].to_numpy()))
    if dataset.outcomes[outcome].published is not None:
        analysis.reproduction = _optional(
            analysis, "reproduction of the published result", lambda: reproduce_published(dataset, outcome)
        )
    if analysis.reproduction is not None:
        published = pd.DataFrame(analysis.reproduction.comparison_rows(), columns=COMPARE_COLUMNS)
        analysis.comparison = pd.concat([analysis.comparison, published], ignore_index=True)
    if dataset.moderators:
        analysis.subgroups = _optional(
            analysis,
            "subgroups",
            lambda: fit_subgroups_one_at_a_time(dataset, outcome, engine="exact", priors=priors, table=table),
        )
    if any(c.startswith("rob_") for c in dataset.studies.columns):
        analysis.rob = _optional(
            analysis, "risk-of-bias sensitivity", lambda: rob_sensitivity(dataset, outcome, priors=priors, table=table)
        )
    analysis.small_study = _optional(
        analysis,
        "small-study models",
        lambda: fit_small_study(
            dataset,
            outcome,
            priors=priors,
            engine="exact",
            seed=seed,
            sampler=sampler,
            table=table,
        ),
    )
    posterior = None if analysis.nuts is None else analysis.nuts.posterior
    analysis.influence = _optional(
        analysis,
        "influence analysis",
        lambda: influence_analysis(
            dataset, outcome, priors=priors, engine=engine, seed=seed, table=table, posterior=posterior
        ),
    )
    if analysis.influence is not None and analysis.arm is not None:
        analysis.influence.default = arm_leave_one_out(analysis.arm, dataset)
    return analysis


def _nuts_analyses(
    analysis: OutcomeAnalysis,
    dataset: Dataset,
    table: EffectTable,
    outcome: str,
    *,
    priors: PriorSet,
    sampler: SamplerSettings,
    seed: int,
    progressbar: bool,
) -> None:
    """The NUTS fit and the checks built on its draws; the arm-level likelihood for arm-level data."""
    nuts = fit_random_effects(
        dataset, outcome, engine="nuts", priors=priors, seed=seed, sampler=sampler, table=table, progressbar=progressbar
    )
    analysis.nuts = nuts
    analysis.engine_check = engine_check([nuts], [analysis.exact])
    if dataset.level == "arms":
        analysis.arm = _optional(
            analysis,
            "arm-level likelihood",
            lambda: fit_arm_level(dataset, outcome, priors=priors, seed=seed, sampler=sampler, table=table),
        )
    # predictive checks and power-scaling of the priors of the primary (default) fit
    primary = analysis.primary
    analysis.ppc = check_fit(primary, dataset, seed=seed)
    if primary is not nuts:  # the normal-likelihood fit's own checks, for its JSON
        check_fit(nuts, dataset, seed=seed)
    if analysis.arm is not None:
        analysis.loo_pit = arm_loo_pit(analysis.arm, dataset, seed=seed)
    analysis.psense = power_scaling(primary, top_level=top_level_parameters(primary))
    if analysis.arm is not None:
        analysis.prior_grid_default = reweighted_prior_grid(analysis.arm)


def _optional[T](analysis: OutcomeAnalysis, name: str, run: Callable[[], T]) -> T | None:
    """Run one analysis; if its precondition fails on these data, record why and return None."""
    try:
        return run()
    except NotApplicable as exc:
        analysis.skipped[name] = str(exc)
        return None


def run_multivariate_job(job: OutcomeJob) -> MultivariateArtifacts:
    """Worker entry point of the multivariate model (default outcome set) and its ρ_w sensitivity."""
    started, compiling = time.perf_counter(), compile_seconds()
    result, _ = fit_multivariate_structures(job.dataset, seed=job.seed, sampler=job.sampler, table=job.table)
    # the rho_w grid reweights the selected fit's draws (PSIS), refitting only where k-hat is high; a refit is a
    # sensitivity table of posterior summaries: half the draws and tuning suffice (ESS well above 400 here)
    light = replace(job.sampler, draws=max(job.sampler.draws // 2, 100), tune=max(job.sampler.tune // 2, 100))
    estimated = result.rho_within_posterior is not None
    sensitivity = rho_within_sensitivity(
        job.dataset,
        seed=job.seed,
        sampler=light,
        table=job.table,
        structure=result.structure,
        fit=result if estimated else None,
    )
    fitted = time.perf_counter()
    artifacts = build_multivariate_artifacts(result, sensitivity)
    artifacts.timings = {"analysis": fitted - started, "figures": time.perf_counter() - fitted}
    artifacts.timings["compile"] = compile_seconds() - compiling
    return artifacts


def run_job(job: OutcomeJob) -> OutcomeArtifacts | MultivariateArtifacts:
    """Worker entry point for any job, fits and figures in one process."""
    if job.kind == "multivariate":
        return run_multivariate_job(job)
    return run_outcome_figures(job, run_outcome_fits(job))


def run_outcome_fits(job: OutcomeJob) -> OutcomeAnalysis:
    """Worker entry point: analyse one outcome (picklable result, no PyMC models)."""
    started, compiling = time.perf_counter(), compile_seconds()
    analysis = analyse_outcome(
        job.dataset,
        job.table,
        job.outcome,
        priors=job.priors,
        sampler=job.sampler,
        seed=job.seed,
        engine=job.engine,
        decision=job.decision,
    )
    analysis.nuts = None if analysis.nuts is None else without_model(analysis.nuts)
    analysis.arm = None if analysis.arm is None else without_model(analysis.arm)
    analysis.seconds = time.perf_counter() - started
    analysis.compile_seconds = compile_seconds() - compiling
    return analysis


def run_outcome_figures(job: OutcomeJob, analysis: OutcomeAnalysis) -> OutcomeArtifacts:
    """Worker entry point: render one analysed outcome's figures, tables and text."""
    started = time.perf_counter()
    artifacts = build_artifacts(analysis)
    artifacts.timings = {"analysis": analysis.seconds, "figures": time.perf_counter() - started}
    artifacts.timings["compile"] = analysis.compile_seconds
    return artifacts


def _jobs(
    dataset: Dataset,
    table: EffectTable,
    *,
    seed: int,
    priors: PriorSet,
    sampler: SamplerSettings,
    engine: str,
    decision: DecisionSettings = DEFAULT_DECISION,
) -> tuple[list[OutcomeJob], dict[str, str]]:
    """One job per outcome with data (seed ``seed + j`` for the j-th declared outcome), and the skipped ones."""
    files = {
        p.name: p.read_bytes()
        for p in sorted(dataset.path.iterdir())
        if p.suffix in (".toml", ".csv") and p.name not in ("arms.csv", "effects.csv")
    }
    source = cache.source_digest()
    common = {"dataset": dataset, "table": table, "priors": priors, "sampler": sampler, "engine": engine}
    common["decision"] = decision
    jobs, skipped = [], {}
    for j, outcome in enumerate(dataset.outcomes):
        rows = table.data[table.data["outcome"] == outcome]
        raw = dataset.arms if dataset.arms is not None else dataset.effects
        if rows.empty:
            skipped[outcome] = "no study reports this outcome"
            continue
        settings = {"priors": priors.to_dict(), "sampler": asdict(sampler), "seed": seed + j, "engine": engine}
        settings["decision"] = asdict(decision)
        settings["measure"] = dataset.effect_measure  # --measure may differ from dataset.toml
        key = cache.outcome_key(
            source=source,
            dataset_files=files,
            outcome=outcome,
            settings=settings,
            outcome_rows=raw[raw["outcome"] == outcome].to_csv(index=False),
        )
        jobs.append(OutcomeJob(outcome, key, seed + j, **common))
    multivariate_outcomes = default_outcomes(dataset, table)
    if engine == "nuts" and len(multivariate_outcomes) >= 2:
        settings = {"sampler": asdict(sampler), "seed": seed, "model": "multivariate"}
        settings["measure"] = dataset.effect_measure
        raw = dataset.arms if dataset.arms is not None else dataset.effects
        key = cache.outcome_key(
            source=source,
            dataset_files=files,
            outcome=MULTIVARIATE,
            settings=settings,
            outcome_rows=raw[raw["outcome"].isin(multivariate_outcomes)].to_csv(index=False),
        )
        jobs.append(OutcomeJob(MULTIVARIATE, key, seed, **common, kind="multivariate"))
    return jobs, skipped


def _worker_init(parent: int) -> None:
    """Worker set-up: leave Ctrl-C to the parent, and exit if the parent dies (no orphan workers)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(os.getpid(),)
    )


def _execute(jobs: list[OutcomeJob], *, workers: int, progress: Progress) -> dict[str, OutcomeArtifacts]:
    """Run the jobs, in worker processes when there are several; progress as each outcome finishes.

    With ``workers >= 2`` the outcome fits run one after another in a single worker process, so
    that each model structure is compiled once (:mod:`analysis.fitting.nuts`, ~15 s for the normal
    and arm-level models) instead of once per worker; the multivariate model and the
    figures of fitted outcomes run in the other worker(s), and the fitting worker renders
    figures too once every fit is done. Jobs are handed out only to idle workers, so no queue
    builds up behind a busy one.
    """
    done: dict[str, OutcomeArtifacts] = {}
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            fits = "NUTS + exact fits" if job.engine == "nuts" else "exact fits"
            progress(f"{job.outcome}: {fits}, checks, sensitivity, subgroups, figures")
            done[job.outcome] = run_job(job)
        return done
    progress(f"{len(jobs)} job(s) on {workers} worker processes (outcome fits in one of them)")
    pools = {"fits": _pool(1), "other": _pool(workers - 1)}
    scheduler = _Scheduler(jobs, capacity={"fits": 1, "other": workers - 1})
    try:
        while scheduler.unfinished:
            for pool, fn, args in scheduler.ready():
                scheduler.started(pools[pool].submit(fn, *args), pool, args[0])
            finished, _ = wait(scheduler.running, return_when=FIRST_COMPLETED)
            for future in finished:
                result = scheduler.finished(future)
                if isinstance(result, (OutcomeArtifacts, MultivariateArtifacts)):
                    done[_result_key(result)] = result
                    progress(
                        f"[{len(done)}/{len(jobs)}] {_result_key(result)} done "
                        f"({result.timings['analysis']:.1f} s fits, "
                        f"{result.timings['figures']:.1f} s figures)"
                    )
    except BaseException:
        for pool in pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    for pool in pools.values():
        pool.shutdown()
    return done


def _result_key(result: OutcomeArtifacts | MultivariateArtifacts) -> str:
    """The job name of a finished job's artifacts."""
    return MULTIVARIATE if isinstance(result, MultivariateArtifacts) else result.outcome


class _Scheduler:
    """Which job runs next on which pool (see :func:`_execute`); no I/O, no processes."""

    def __init__(self, jobs: list[OutcomeJob], *, capacity: dict[str, int]) -> None:
        self.fits = [j for j in jobs if j.kind == "outcome"]
        self.multivariate = [j for j in jobs if j.kind == "multivariate"]
        self.figures: list[tuple[OutcomeJob, OutcomeAnalysis]] = []
        self.capacity = capacity
        self.running: dict = {}
        self.unfinished = len(jobs)

    def ready(self) -> list[tuple[str, Callable, tuple]]:
        """Jobs to submit now: ``(pool, function, arguments)``, at most one per idle worker."""
        out, load = [], {pool: sum(p == pool for p, _ in self.running.values()) for pool in self.capacity}
        while load["fits"] < self.capacity["fits"] and self.fits:
            out.append(("fits", run_outcome_fits, (self.fits.pop(0),)))
            load["fits"] += 1
        while load["other"] < self.capacity["other"] and (self.multivariate or self.figures):
            out.append(
                ("other", run_multivariate_job, (self.multivariate.pop(0),))
                if self.multivariate
                else ("other", run_outcome_figures, self.figures.pop(0))
            )
            load["other"] += 1
        while load["fits"] < self.capacity["fits"] and not self.fits and self.figures:
            out.append(("fits", run_outcome_figures, self.figures.pop(0)))
            load["fits"] += 1
        return out

    def started(self, future: Future, pool: str, job: OutcomeJob) -> None:
        """Record a submitted job."""
        self.running[future] = (pool, job)

    def finished(self, future: Future) -> OutcomeAnalysis | OutcomeArtifacts | MultivariateArtifacts:
        """Take a finished job's result: a fitted outcome waits for its figures, artifacts are final."""
        _, job = self.running.pop(future)
        result = future.result()
        if isinstance(result, OutcomeAnalysis):
            self.figures.append((job, result))
        else:
            self.unfinished -= 1
        return result


def run_key(jobs: list[OutcomeJob], skipped: dict[str, str]) -> str:
    """Key of a whole run: the outcome keys and skipped outcomes (what the report is made of)."""
    digest = hashlib.sha256(cache.source_digest().encode())
    for job in jobs:
        digest.update(job.key.encode())
    digest.update(json_text(skipped).encode())
    return digest.hexdigest()


def plan_run(
    dataset: Path | Dataset,
    *,
    seed: int = 1,
    priors: PriorSet | None = None,
    sampler: SamplerSettings | None = None,
    engine: str = "nuts",
    decision: DecisionSettings = DEFAULT_DECISION,
) -> RunPlan:
    """Load and validate the dataset (unless given loaded) and plan its jobs without running them."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    dataset = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    priors, sampler = priors or default_priors(dataset.effect_measure), sampler or SamplerSettings()
    table = compute_effects(dataset)
    jobs, skipped = _jobs(dataset, table, seed=seed, priors=priors, sampler=sampler, engine=engine, decision=decision)
    notes = () if engine == "nuts" else ("the multivariate model was not fitted: it needs NUTS (--engine nuts)",)
    return RunPlan(
        dataset=dataset,
        table=table,
        jobs=jobs,
        skipped=skipped,
        key=run_key(jobs, skipped),
        priors=priors,
        sampler=sampler,
        seed=seed,
        engine=engine,
        notes=notes,
    )


def run_analysis(
    dataset: Path | Dataset,
    *,
    seed: int = 1,
    priors: PriorSet | None = None,
    sampler: SamplerSettings | None = None,
    engine: str = "nuts",
    progress: Progress = _silent,
    workers: int = 2,
    use_cache: bool = True,
    decision: DecisionSettings = DEFAULT_DECISION,
) -> RunResult:
    """Run every analysis step on a dataset (no report files are written here).

    Parameters
    ----------
    dataset : pathlib.Path or Dataset
        Dataset folder, or a dataset already loaded with :func:`analysis.dataset.load.load_dataset`.
    seed : int
        Base seed; outcome ``j`` (0-based, declaration order) is sampled with seed ``seed + j``,
        so results do not depend on the number of workers or the cache.
    priors : PriorSet, optional
        Priors of mu and tau (defaults if omitted).
    sampler : SamplerSettings, optional
        NUTS settings (defaults if omitted).
    engine : {"nuts", "exact"}
        "nuts": every analysis; "exact": the exact engine only (seconds; the analyses that need NUTS
        draws and the multivariate model are skipped with a note).
    progress : callable
        Called with a short message at each step.
    workers : int
        Worker processes for outcomes that are not cached (1 = in this process).
    use_cache : bool
        Load and store per-outcome artifacts in the content-addressed cache.
    decision : DecisionSettings
        Minimal relevant effect and planned arm size of the decision quantities (defaults if omitted).
    """
    clock = time.perf_counter()
    if not isinstance(dataset, Dataset):
        progress(f"loading and validating {dataset}")
    plan = plan_run(dataset, seed=seed, priors=priors, sampler=sampler, engine=engine, decision=decision)
    return execute_plan(plan, progress=progress, workers=workers, use_cache=use_cache, started=clock)


def execute_plan(
    plan: RunPlan,
    *,
    progress: Progress = _silent,
    workers: int = 2,
    use_cache: bool = True,
    started: float | None = None,
) -> RunResult:
    """Run a planned analysis (:func:`plan_run`): cached outcomes are loaded, the others computed."""
    clock = time.perf_counter() if started is None else started
    jobs = plan.jobs
    cached = {job.outcome: cache.load(job.key) for job in jobs} if use_cache else {}
    hits = {k: v for k, v in cached.items() if isinstance(v, (OutcomeArtifacts, MultivariateArtifacts))}
    for artifact in hits.values():
        artifact.cache_hit = True
    if hits:
        progress(f"{len(hits)} outcome(s) unchanged, loaded from the cache: {', '.join(hits)}")
    fresh = _execute([j for j in jobs if j.outcome not in hits], workers=workers, progress=progress)
    if use_cache:
        for job in jobs:
            if job.outcome in fresh:
                cache.store(job.key, fresh[job.outcome])
    everything = {job.outcome: hits.get(job.outcome) or fresh[job.outcome] for job in jobs}
    multivariate = everything.pop(MULTIVARIATE, None)
    run = RunResult(
        dataset=plan.dataset,
        table=plan.table,
        outcomes=everything,
        skipped=plan.skipped,
        seed=plan.seed,
        priors=plan.priors,
        sampler=plan.sampler,
        key=plan.key,
        multivariate=multivariate,
        engine=plan.engine,
        notes=list(plan.notes),
    )
    run.timings = {"analysis": time.perf_counter() - clock, "cached_outcomes": float(len(hits))}
    return run
