"""The job scheduler of ``evmeta run`` (analysis.run.pipeline._Scheduler), driven without processes.

Rules: every outcome is fitted in the "fits" pool, one after another (so that each model
structure compiles once per run); the multivariate job and figures go to the "other" pool; the
fits pool renders figures only once no fit is left; no pool ever has more jobs than workers.
"""

from __future__ import annotations

from analysis.fitting.sampling import SamplerSettings
from analysis.results.outcome import OutcomeAnalysis
from analysis.run.pipeline import OutcomeJob, _Scheduler, run_multivariate_job, run_outcome_figures, run_outcome_fits
from models.priors import PriorSet


class Done:
    """A finished future."""

    def __init__(self, value: object) -> None:
        self.value = value

    def result(self) -> object:
        return self.value


def _job(outcome: str, kind: str = "outcome") -> OutcomeJob:
    # the scheduler reads only outcome and kind: no dataset is needed to drive it
    return OutcomeJob(
        outcome, f"key-{outcome}", 1, dataset=None, table=None, priors=PriorSet(), sampler=SamplerSettings(), kind=kind
    )


def _analysis() -> OutcomeAnalysis:
    return OutcomeAnalysis(nuts=None, exact=None, ppc=None, psense=None, prior_grid=None, comparison=None)


def _run(scheduler: _Scheduler, finish_order: list[str]) -> list[tuple[str, str, str]]:
    """Submit what is ready, finish jobs in the given pool order, and log (pool, step, outcome)."""
    log, futures = [], {}
    for pool in finish_order:
        for target, fn, args in scheduler.ready():
            step = {run_outcome_fits: "fit", run_outcome_figures: "figures", run_multivariate_job: "multivariate"}[fn]
            future = Done(_analysis() if step == "fit" else f"artifacts of {args[0].outcome}")
            futures[future] = (target, step, args[0].outcome)
            scheduler.started(future, target, args[0])
            log.append((target, step, args[0].outcome))
            assert sum(p == target for p, _ in scheduler.running.values()) <= scheduler.capacity[target]
        future = next(f for f in scheduler.running if futures[f][0] == pool)
        scheduler.finished(future)
    return log


def test_fits_run_in_one_pool_in_order_and_figures_fill_idle_workers():
    jobs = [_job("A"), _job("B"), _job("C"), _job("__multivariate__", "multivariate")]
    scheduler = _Scheduler(jobs, capacity={"fits": 1, "other": 1})
    # fits finish A, B, C while the multivariate job runs; then both pools render figures
    log = _run(scheduler, ["fits", "fits", "fits", "other", "other", "fits", "other"])
    assert scheduler.unfinished == 0 and not scheduler.running
    assert [(p, o) for p, step, o in log if step == "fit"] == [("fits", "A"), ("fits", "B"), ("fits", "C")]
    assert ("other", "multivariate", "__multivariate__") == log[1]
    figures = [(p, o) for p, step, o in log if step == "figures"]
    assert sorted(o for _, o in figures) == ["A", "B", "C"]
    assert {p for p, _ in figures} == {"fits", "other"}  # the fitting worker helps once its fits are done
    first_figure_on_fits = next(i for i, (p, step, _) in enumerate(log) if p == "fits" and step == "figures")
    assert first_figure_on_fits > max(i for i, (_, step, _) in enumerate(log) if step == "fit")


def test_without_multivariate_the_other_pool_renders_as_soon_as_a_fit_is_done():
    scheduler = _Scheduler([_job("A"), _job("B")], capacity={"fits": 1, "other": 1})
    log = _run(scheduler, ["fits", "other", "fits", "other"])
    assert log[:3] == [("fits", "fit", "A"), ("fits", "fit", "B"), ("other", "figures", "A")]
    assert scheduler.unfinished == 0
