"""The result types a fit returns, as one name for code that accepts any of them (CLI, writers)."""

from __future__ import annotations

from analysis.results.bias_averaged import BiasAveragedResult
from analysis.results.meta_regression import MetaRegressionResult, SubgroupResults
from analysis.results.multivariate import MultivariateResult
from analysis.results.random_effects import MetaAnalysisResult
from analysis.results.small_study import SmallStudyResult

#: A per-outcome fit (``evmeta fit --model ...``): each has ``outcome``, ``to_dict()`` and ``str()``.
OutcomeFit = MetaAnalysisResult | MetaRegressionResult | SubgroupResults | SmallStudyResult | BiasAveragedResult
#: Any fit, the multivariate one included.
FitResult = OutcomeFit | MultivariateResult
