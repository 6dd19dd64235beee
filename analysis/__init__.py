"""evmeta's Python API: Bayesian meta-analysis of preclinical, multi-outcome animal studies.

The names below are imported lazily (PEP 562), so ``import analysis`` is cheap and the command
line (``evmeta validate``) does not pay for PyMC until a model is fitted. A complete example is in
the README ("Python API")::

    from analysis import load_dataset, fit_random_effects, forest_plot

    dataset = load_dataset("data/bmsc_ev_osteoporosis")
    fit = fit_random_effects(dataset, "BMD")
    print(fit.summary())
    forest_plot(fit).savefig("forest_BMD.png")

The data path, and the subpackage each name lives in: ``dataset`` (read, validate, load, effect
sizes, simulate) -> ``fitting`` (one module per model family) -> ``results`` -> ``checks``
(predictive checks, sensitivity, influence, comparison) -> ``plots`` -> ``report``; ``run`` is the
whole ``evmeta run`` pipeline.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

#: Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    # data in
    "Dataset": "analysis.dataset.load",
    "load_dataset": "analysis.dataset.load",
    "validate_dataset": "analysis.dataset.validate",
    "DatasetError": "analysis.dataset.problems",
    "EffectTable": "analysis.dataset.effects",
    "compute_effects": "analysis.dataset.effects",
    "study_effects": "analysis.dataset.effects",
    "with_measure": "analysis.dataset.effects",
    "simulate_dataset": "analysis.dataset.simulate",
    "write_dataset": "analysis.dataset.simulate",
    "import_comparisons": "analysis.importing.comparisons",
    "ImportReport": "analysis.importing.comparisons",
    # priors and sampler settings
    "PriorSpec": "models.priors",
    "PriorSet": "models.priors",
    "default_priors": "models.priors",
    "SamplerSettings": "analysis.fitting.sampling",
    # models
    "fit_random_effects": "analysis.fitting.random_effects",
    "fit_arm_level": "analysis.fitting.arm_level",
    "fit_meta_regression": "analysis.fitting.meta_regression",
    "fit_small_study": "analysis.fitting.small_study",
    "fit_multivariate": "analysis.fitting.multivariate",
    "fit_multivariate_structures": "analysis.fitting.multivariate_structures",
    "exact_posterior": "models.exact.posterior",
    "MetaAnalysisResult": "analysis.results.random_effects",
    # checks and comparisons
    "posterior_predictive_check": "analysis.checks.predictive",
    "check_fit": "analysis.checks.calibrated",
    "decision_quantities": "analysis.inference.decision",
    "rob_sensitivity": "analysis.checks.risk_of_bias",
    "power_scaling": "analysis.checks.sensitivity",
    "prior_grid": "analysis.checks.sensitivity",
    "influence_analysis": "analysis.checks.influence",
    "compare_table": "analysis.checks.compare",
    "standard_comparison": "analysis.checks.compare",
    "rma_uni": "models.frequentist",
    # plots (each returns a matplotlib Figure; nothing is saved)
    "forest_plot": "analysis.plots.forest",
    "pooled_summary_plot": "analysis.plots.forest",
    "compare_forest": "analysis.plots.compare",
    "funnel_plot": "analysis.plots.small_study",
    "subgroup_plot": "analysis.plots.meta_regression",
    "influence_plot": "analysis.plots.influence",
    # the whole analysis and its report
    "run_analysis": "analysis.run.pipeline",
    "write_run_report": "analysis.report.write",
}

__all__ = [
    "Dataset",
    "DatasetError",
    "check_fit",
    "decision_quantities",
    "EffectTable",
    "ImportReport",
    "MetaAnalysisResult",
    "PriorSet",
    "PriorSpec",
    "SamplerSettings",
    "compare_forest",
    "compare_table",
    "compute_effects",
    "default_priors",
    "exact_posterior",
    "fit_arm_level",
    "fit_meta_regression",
    "fit_multivariate",
    "fit_multivariate_structures",
    "fit_random_effects",
    "fit_small_study",
    "forest_plot",
    "funnel_plot",
    "import_comparisons",
    "influence_analysis",
    "influence_plot",
    "load_dataset",
    "pooled_summary_plot",
    "posterior_predictive_check",
    "power_scaling",
    "prior_grid",
    "rma_uni",
    "rob_sensitivity",
    "run_analysis",
    "simulate_dataset",
    "standard_comparison",
    "study_effects",
    "subgroup_plot",
    "validate_dataset",
    "with_measure",
    "write_dataset",
    "write_run_report",
]

if TYPE_CHECKING:
    from analysis.checks.calibrated import check_fit
    from analysis.checks.compare import compare_table, standard_comparison
    from analysis.checks.influence import influence_analysis
    from analysis.checks.predictive import posterior_predictive_check
    from analysis.checks.risk_of_bias import rob_sensitivity
    from analysis.checks.sensitivity import power_scaling, prior_grid
    from analysis.dataset.effects import EffectTable, compute_effects, study_effects, with_measure
    from analysis.dataset.load import Dataset, load_dataset
    from analysis.dataset.problems import DatasetError
    from analysis.dataset.simulate import simulate_dataset, write_dataset
    from analysis.dataset.validate import validate_dataset
    from analysis.fitting.arm_level import fit_arm_level
    from analysis.fitting.meta_regression import fit_meta_regression
    from analysis.fitting.multivariate import fit_multivariate
    from analysis.fitting.multivariate_structures import fit_multivariate_structures
    from analysis.fitting.random_effects import fit_random_effects
    from analysis.fitting.sampling import SamplerSettings
    from analysis.fitting.small_study import fit_small_study
    from analysis.importing.comparisons import ImportReport, import_comparisons
    from analysis.inference.decision import decision_quantities
    from analysis.plots.compare import compare_forest
    from analysis.plots.forest import forest_plot, pooled_summary_plot
    from analysis.plots.influence import influence_plot
    from analysis.plots.meta_regression import subgroup_plot
    from analysis.plots.small_study import funnel_plot
    from analysis.report.write import write_run_report
    from analysis.results.random_effects import MetaAnalysisResult
    from analysis.run.pipeline import run_analysis
    from models.exact.posterior import exact_posterior
    from models.frequentist import rma_uni
    from models.priors import PriorSet, PriorSpec, default_priors


def __getattr__(name: str) -> object:
    """Import a public name on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
