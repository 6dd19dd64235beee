"""``evmeta run``: the whole analysis of a dataset as a sequence of steps, reported to a folder.

Steps: validate and load the dataset; compute effect sizes; for every outcome fit the
random-effects model with NUTS (convergence-gated, retried once) and with the exact engine
(the cross-check); write figures, tables, posteriors, ``report.md`` and ``manifest.json``.
The output folder is built in a staging folder and swapped in only when complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import pandas as pd

from analysis.dataset import Dataset, load_dataset
from analysis.effects import EffectTable, compute_effects
from analysis.fit import PriorSet, SamplerSettings, fit_random_effects
from analysis.results import MetaAnalysisResult

Progress = Callable[[str], None]


def _silent(message: str) -> None:
    """Default progress callback: report nothing."""


@dataclass
class RunResult:
    """Everything ``evmeta run`` computed, ready for the report."""

    dataset: Dataset
    table: EffectTable
    nuts: list[MetaAnalysisResult]
    exact: list[MetaAnalysisResult]
    skipped: dict[str, str]
    seed: int
    priors: PriorSet
    sampler: SamplerSettings
    timings: dict[str, float] = field(default_factory=dict)

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
            diff = r.summaries[param]["mean"] - exact_by[r.outcome.id].summaries[param]["mean"]
            rows.append({"outcome": r.outcome.id, "parameter": param,
                         "exact_mean": exact_by[r.outcome.id].summaries[param]["mean"],
                         "nuts_mean": r.summaries[param]["mean"], "mcse": se,
                         "z_mcse": abs(diff) / se, "within_4_mcse": abs(diff) <= 4 * se})
    return pd.DataFrame(rows)


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
        Base seed; outcome ``j`` (0-based) is sampled with seed ``seed + j``.
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
    run = RunResult(dataset=dataset, table=table, nuts=[], exact=[], skipped={}, seed=seed, priors=priors, sampler=sampler)
    run.timings["data"] = time.perf_counter() - clock
    outcomes = list(dataset.outcomes)
    for j, outcome in enumerate(outcomes):
        if (table.data["outcome"] == outcome).sum() == 0:
            run.skipped[outcome] = "no study reports this outcome"
            continue
        started = time.perf_counter()
        progress(f"[{j + 1}/{len(outcomes)}] {outcome}: exact engine + NUTS random-effects fit")
        kwargs = {"priors": priors, "table": table}
        run.exact.append(fit_random_effects(dataset, outcome, engine="exact", **kwargs))
        run.nuts.append(fit_random_effects(dataset, outcome, engine="nuts", seed=seed + j, sampler=sampler,
                                           progressbar=progressbar, **kwargs))
        run.timings[f"fit_{outcome}"] = time.perf_counter() - started
    run.timings["total_fits"] = time.perf_counter() - clock
    return run

