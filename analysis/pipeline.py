"""``evmeta run``: the whole analysis of a dataset as a sequence of steps (no file output here).

Per outcome: the random-effects model with NUTS (convergence-gated, retried once) and with
the exact engine (the cross-check); posterior predictive checks; power-scaling and a prior
grid; the comparison with the frequentist DL/REML estimates; subgroups as covariates, one
moderator at a time as the paper did (exact engine). The report module writes it all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import pandas as pd

from analysis.checks import PPCResult, posterior_predictive_check
from analysis.compare import compare_table
from analysis.dataset import Dataset, load_dataset
from analysis.effects import EffectTable, compute_effects
from analysis.fit import PriorSet, SamplerSettings, fit_random_effects
from analysis.meta_regression import fit_subgroups_one_at_a_time
from analysis.meta_regression_result import SubgroupResults
from analysis.results import MetaAnalysisResult
from analysis.sensitivity import power_scaling, prior_grid

Progress = Callable[[str], None]


def _silent(message: str) -> None:
    """Default progress callback: report nothing."""


@dataclass
class OutcomeAnalysis:
    """Everything computed for one outcome."""

    nuts: MetaAnalysisResult
    exact: MetaAnalysisResult
    ppc: PPCResult
    psense: pd.DataFrame
    prior_grid: pd.DataFrame
    comparison: pd.DataFrame
    subgroups: SubgroupResults | None = None


@dataclass
class RunResult:
    """Everything ``evmeta run`` computed, ready for the report."""

    dataset: Dataset
    table: EffectTable
    outcomes: dict[str, OutcomeAnalysis]
    skipped: dict[str, str]
    seed: int
    priors: PriorSet
    sampler: SamplerSettings
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def nuts(self) -> list[MetaAnalysisResult]:
        """The NUTS random-effects fit of every analysed outcome."""
        return [a.nuts for a in self.outcomes.values()]

    @property
    def exact(self) -> list[MetaAnalysisResult]:
        """The exact-engine fit of every analysed outcome."""
        return [a.exact for a in self.outcomes.values()]

    @property
    def failed(self) -> list[str]:
        """Outcomes whose NUTS fit failed a convergence gate (after the retry)."""
        return [r.outcome.id for r in self.nuts if not r.converged]


def engine_check(nuts: list[MetaAnalysisResult], exact: list[MetaAnalysisResult]) -> pd.DataFrame:
    """NUTS posterior means against the exact engine, in Monte Carlo standard errors.

    Returns
    -------
    pandas.DataFrame
        Per outcome and parameter (mu, tau): exact mean, NUTS mean, MCSE of the NUTS mean,
        ``|difference| / MCSE`` and whether it is within 4 MCSE.
    """
    rows = []
    exact_by = {r.outcome.id: r for r in exact}
    for r in nuts:
        if r.posterior is None or r.outcome.id not in exact_by:
            continue
        mcse = az.mcse(r.posterior, var_names=["mu", "tau"], method="mean")
        node = mcse["posterior"] if "posterior" in mcse.children else mcse
        for param in ("mu", "tau"):
            se = float(node[param])
            reference = exact_by[r.outcome.id].summaries[param]["mean"]
            diff = r.summaries[param]["mean"] - reference
            rows.append({"outcome": r.outcome.id, "parameter": param, "exact_mean": reference,
                         "nuts_mean": r.summaries[param]["mean"], "mcse": se,
                         "z_mcse": abs(diff) / se, "within_4_mcse": abs(diff) <= 4 * se})
    return pd.DataFrame(rows)


def analyse_outcome(
    dataset: Dataset, table: EffectTable, outcome: str, *, priors: PriorSet, sampler: SamplerSettings,
    seed: int, progressbar: bool = False,
) -> OutcomeAnalysis:
    """Fit, check and compare one outcome (see the module docstring)."""
    exact = fit_random_effects(dataset, outcome, engine="exact", priors=priors, table=table)
    nuts = fit_random_effects(dataset, outcome, engine="nuts", priors=priors, seed=seed, sampler=sampler,
                              table=table, progressbar=progressbar)
    fits = {"NUTS (default priors)": nuts.to_dict(), "exact engine (default priors)": exact.to_dict()}
    comparison = compare_table(fits, frequentist=(nuts.studies["yi"].to_numpy(), nuts.studies["vi"].to_numpy()))
    subgroups = None
    if dataset.moderators:
        subgroups = fit_subgroups_one_at_a_time(dataset, outcome, engine="exact", priors=priors, table=table)
    return OutcomeAnalysis(
        nuts=nuts, exact=exact, ppc=posterior_predictive_check(nuts, seed=seed), psense=power_scaling(nuts),
        prior_grid=prior_grid(dataset, outcome, table=table), comparison=comparison, subgroups=subgroups,
    )


def run_analysis(
    dataset_path: Path,
    *,
    seed: int = 1,
    priors: PriorSet | None = None,
    sampler: SamplerSettings | None = None,
    progress: Progress = _silent,
    progressbar: bool = False,
) -> RunResult:
    """Run every analysis step on a dataset (no files are written here).

    Parameters
    ----------
    dataset_path : pathlib.Path
        Dataset folder.
    seed : int
        Base seed; outcome ``j`` (0-based, declaration order) is sampled with seed ``seed + j``.
    priors, sampler : optional
        Priors and NUTS settings (defaults of :mod:`analysis.fit`).
    progress : callable
        Called with a short message before each step.
    progressbar : bool
        Show PyMC's progress display while sampling.
    """
    priors, sampler = priors or PriorSet(), sampler or SamplerSettings()
    clock = time.perf_counter()
    progress(f"loading and validating {dataset_path}")
    dataset = load_dataset(dataset_path)
    table = compute_effects(dataset)
    run = RunResult(dataset=dataset, table=table, outcomes={}, skipped={}, seed=seed, priors=priors, sampler=sampler)
    run.timings["data"] = time.perf_counter() - clock
    outcomes = list(dataset.outcomes)
    for j, outcome in enumerate(outcomes):
        if (table.data["outcome"] == outcome).sum() == 0:
            run.skipped[outcome] = "no study reports this outcome"
            continue
        started = time.perf_counter()
        progress(f"[{j + 1}/{len(outcomes)}] {outcome}: NUTS + exact fits, predictive checks, prior sensitivity")
        run.outcomes[outcome] = analyse_outcome(dataset, table, outcome, priors=priors, sampler=sampler,
                                                seed=seed + j, progressbar=progressbar)
        run.timings[f"outcome_{outcome}"] = time.perf_counter() - started
    run.timings["analysis"] = time.perf_counter() - clock
    return run
