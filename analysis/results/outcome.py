"""Everything computed for one outcome by ``evmeta run`` (live results, before rendering)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.results.influence import InfluenceResult
from analysis.results.meta_regression import SubgroupResults
from analysis.results.predictive import PPCResult
from analysis.results.random_effects import MetaAnalysisResult
from analysis.results.small_study import SmallStudyResult


@dataclass
class OutcomeAnalysis:
    """Everything computed for one outcome (live objects; rendered by :mod:`analysis.report.render`)."""

    nuts: MetaAnalysisResult
    exact: MetaAnalysisResult
    ppc: PPCResult
    psense: pd.DataFrame
    prior_grid: pd.DataFrame
    comparison: pd.DataFrame
    subgroups: SubgroupResults | None = None
    engine_check: pd.DataFrame | None = None
    small_study: SmallStudyResult | None = None
    influence: InfluenceResult | None = None
    notes: list[str] = field(default_factory=list)
    arm: MetaAnalysisResult | None = None
    seconds: float = 0.0
