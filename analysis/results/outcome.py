"""Everything computed for one outcome by ``evmeta run`` (live results, before rendering), and the
names of the result types a fit returns (``OutcomeFit``, ``FitResult``) for code that accepts any of
them (CLI, writers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.checks.risk_of_bias import RobSensitivity
from analysis.inference.decision_result import DecisionQuantities
from analysis.results.bias_averaged import BiasAveragedResult
from analysis.results.influence import InfluenceResult
from analysis.results.meta_regression import MetaRegressionResult, SubgroupResults
from analysis.results.multivariate import MultivariateResult
from analysis.results.predictive import LooPitResult, PPCResult
from analysis.results.random_effects import MetaAnalysisResult
from analysis.results.reproduction import Reproduction
from analysis.results.small_study import SmallStudyResult

#: A per-outcome fit (``evmeta fit --model ...``): each has ``outcome``, ``to_dict()`` and ``str()``.
OutcomeFit = MetaAnalysisResult | MetaRegressionResult | SubgroupResults | SmallStudyResult | BiasAveragedResult
#: Any fit, the multivariate one included.
FitResult = OutcomeFit | MultivariateResult


@dataclass
class OutcomeAnalysis:
    """Everything computed for one outcome (live objects; rendered by :mod:`analysis.report.render`).

    ``arm`` is the default model of arm-level SMD data (arm-level likelihood, comparisons nested in
    studies) and the primary fit when it ran (the predictive checks, power-scaling and the
    reweighted prior grid use it); ``nuts`` is the normal-likelihood NUTS fit (the primary fit of
    effect-level data, and then the one checked); both are None when the run uses the exact engine
    only (``evmeta run --engine exact``): then the exact fit is the primary one and the analyses
    that need posterior draws are skipped.
    ``skipped`` maps each analysis that could not run on these data to its one-line reason.
    """

    exact: MetaAnalysisResult
    prior_grid: pd.DataFrame
    comparison: pd.DataFrame
    nuts: MetaAnalysisResult | None = None
    ppc: PPCResult | None = None
    loo_pit: LooPitResult | None = None
    psense: pd.DataFrame | None = None
    subgroups: SubgroupResults | None = None
    engine_check: pd.DataFrame | None = None
    small_study: SmallStudyResult | None = None
    influence: InfluenceResult | None = None
    reproduction: Reproduction | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    arm: MetaAnalysisResult | None = None
    #: the default fit under alternative priors by PSIS reweighting (analysis.checks.reweighting)
    prior_grid_default: pd.DataFrame | None = None
    #: the pooled effect by SYRCLE risk-of-bias judgement (analysis.checks.risk_of_bias)
    rob: RobSensitivity | None = None
    seconds: float = 0.0
    compile_seconds: float = 0.0

    @property
    def decision(self) -> DecisionQuantities | None:
        """P(mu > delta), the new study and its replication (:mod:`analysis.inference.decision`) of the primary fit."""
        return self.primary.decision

    @property
    def primary(self) -> MetaAnalysisResult:
        """The fit the report leads with: the default (arm-level) fit, else the normal NUTS fit, else exact."""
        return self.arm or self.nuts or self.exact
