"""One place that turns a fit request (model, engine, priors, moderator, seed) into the right fit.

The CLI builds a :class:`FitRequest` from its arguments; :func:`fit_outcome` validates it and
dispatches to the model's fitting function, so every model is reachable the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.checks.calibrated import check_fit
from analysis.dataset.effects import EffectTable
from analysis.dataset.load import Dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.inference.decision import DEFAULT_DECISION, DecisionSettings, decision_quantities
from analysis.results.outcome import OutcomeFit
from analysis.results.random_effects import MetaAnalysisResult
from models.priors import PriorSet, PriorSpec

PER_OUTCOME_MODELS = ("random-effects", "meta-regression", "small-study", "bias-averaged")
MODELS = (*PER_OUTCOME_MODELS, "multivariate")
#: "default": "arm" where it applies (random effects with NUTS on arm-level SMD data), else "normal";
#: "normal": one effect per study (comparisons combined by GLS), normal with known variance;
#: "normal-multilevel": every comparison's effect, normal with its Gleser-Olkin covariance,
#: comparisons nested in studies (analysis.fitting.multilevel); "arm": exact likelihood of the arm
#: summaries with comparisons nested in studies (analysis.fitting.arm_level). The default is the
#: arm-level likelihood because it is the one that is unbiased at 5-10 animals per arm (README,
#: "The default model": simulation study on the flagship design).
LIKELIHOODS = ("default", "normal", "normal-multilevel", "arm")
#: Scale of the meta-regression slope prior (:func:`analysis.fitting.meta_regression.fit_meta_regression`).
SLOPE_SCALES = ("standardised", "unit")


@dataclass(frozen=True)
class FitRequest:
    """What to fit: the model, its engine, priors, sampler settings and model-specific options."""

    model: str = "random-effects"
    engine: str = "nuts"
    #: None: the defaults of the dataset's effect measure (:func:`models.priors.default_priors`).
    priors: PriorSet | None = None
    seed: int = 1
    sampler: SamplerSettings = SamplerSettings()
    moderator: str | None = None
    progressbar: bool = False
    likelihood: str = "default"
    decision: DecisionSettings = DEFAULT_DECISION
    #: meta-regression: prior N(0, S²) of every slope (None: the default S), its scale and centring.
    beta_prior: PriorSpec | None = None
    slope_scale: str = "standardised"
    center: bool = True

    def __post_init__(self) -> None:
        if self.beta_prior is not None and (self.beta_prior.family != "normal" or self.beta_prior.params[0] != 0):
            raise ValueError(
                f"--beta-prior must be normal:0:S (slopes are centred on no effect), got {self.beta_prior}"
            )
        if self.slope_scale not in SLOPE_SCALES:
            raise ValueError(f"slope scale must be one of {', '.join(SLOPE_SCALES)}, got {self.slope_scale!r}")
        meta_regression_only = self.beta_prior is not None or self.slope_scale != "standardised" or not self.center
        if meta_regression_only and self.model != "meta-regression":
            raise ValueError("--beta-prior, --slope-scale and --no-center apply to --model meta-regression only")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}")
        if self.likelihood == "arm" and (
            self.model not in ("random-effects", "meta-regression") or self.engine != "nuts"
        ):
            raise ValueError("--likelihood arm is available for --model random-effects/meta-regression with NUTS")
        if self.likelihood == "normal-multilevel" and self.model != "random-effects":
            raise ValueError("--likelihood normal-multilevel is available for --model random-effects")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.model == "meta-regression" and not self.moderator:
            raise ValueError("--model meta-regression needs --moderator NAME (or --moderator all)")
        if self.moderator and self.model != "meta-regression":
            raise ValueError("--moderator applies to --model meta-regression only")


def resolve_likelihood(request: FitRequest, dataset: Dataset) -> str:
    """The likelihood a request fits with: ``"default"`` becomes ``"arm"`` where that applies, else ``"normal"``."""
    if request.likelihood != "default":
        return request.likelihood
    arm_applies = dataset.level == "arms" and dataset.effect_measure == "SMD"
    return "arm" if arm_applies and request.model == "random-effects" and request.engine == "nuts" else "normal"


def fit_outcome(dataset: Dataset, outcome: str, request: FitRequest, *, table: EffectTable) -> OutcomeFit:
    """Fit one outcome as requested; returns the model's result object (``to_dict()``, ``str()``).

    NUTS fits of the random-effects model and arm-level meta-regressions carry their calibrated
    predictive checks (``checks``, :func:`analysis.checks.calibrated.check_fit`), and NUTS
    random-effects fits their decision quantities (``decision``,
    :func:`analysis.inference.decision.decision_quantities`).

    Raises
    ------
    ValueError
        On an unknown outcome or moderator, or a model that is not fitted per outcome.
    """
    result = _fit(dataset, outcome, request, table=table)
    if isinstance(result, MetaAnalysisResult) and result.posterior is not None:
        check_fit(result, dataset, seed=request.seed)
        if result.model == "random-effects":
            d = request.decision
            result.decision = decision_quantities(
                result, dataset, min_effect=d.min_effect, planned_n=d.planned_n, seed=request.seed
            )
    return result


def _fit(dataset: Dataset, outcome: str, request: FitRequest, *, table: EffectTable) -> OutcomeFit:
    """The fit itself (see :func:`fit_outcome`)."""
    common = {
        "priors": request.priors,
        "seed": request.seed,
        "sampler": request.sampler,
        "table": table,
        "progressbar": request.progressbar,
    }
    likelihood = resolve_likelihood(request, dataset)
    if request.model == "random-effects" and likelihood == "arm":
        from analysis.fitting.arm_level import fit_arm_level

        return fit_arm_level(dataset, outcome, **common)
    if request.model == "random-effects" and likelihood == "normal-multilevel":
        from analysis.fitting.multilevel import fit_multilevel

        return fit_multilevel(dataset, outcome, engine=request.engine, **common)
    if request.model == "meta-regression" and likelihood == "arm":
        from analysis.fitting.arm_level import fit_arm_meta_regression

        moderators = list(dataset.moderators) if request.moderator == "all" else [request.moderator]
        return fit_arm_meta_regression(
            dataset,
            outcome,
            moderators=moderators,
            slope_sd=None if request.beta_prior is None else request.beta_prior.params[1],
            center=request.center,
            **common,
        )
    if request.model == "random-effects":
        return fit_random_effects(dataset, outcome, engine=request.engine, **common)
    if request.model == "meta-regression":
        from analysis.fitting.meta_regression import fit_meta_regression

        if request.moderator != "all" and request.moderator not in dataset.moderators:
            raise ValueError(
                f"moderator {request.moderator!r} is not declared in {dataset.name}; "
                f"declared: {', '.join(dataset.moderators) or 'none'}"
            )
        moderators = "all" if request.moderator == "all" else [request.moderator]
        return fit_meta_regression(
            dataset,
            outcome,
            moderators=moderators,
            engine=request.engine,
            beta_prior_sd=None if request.beta_prior is None else request.beta_prior.params[1],
            slope_prior_scale=request.slope_scale,
            center=request.center,
            **common,
        )
    if request.model == "small-study":
        from analysis.fitting.small_study import fit_small_study

        return fit_small_study(dataset, outcome, engine=request.engine, **common)
    if request.model == "bias-averaged":
        from analysis.fitting.bias_averaged import fit_bias_averaged

        return fit_bias_averaged(dataset, outcome, priors=request.priors, table=table)
    raise ValueError(f"model {request.model!r} is fitted across outcomes, not per outcome")
