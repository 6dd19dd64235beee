"""Result of the bias-averaged ensemble: single-model fits, posterior model probabilities,
inclusion Bayes factors and model-averaged summaries (JSON via ``to_dict``, text via ``__str__``).

Built by :mod:`analysis.fitting.bias_averaged`. Internally every effect is on the benefit scale
(natural value times the outcome's direction); the JSON's ``mu`` summaries are on the natural
scale, as in every other evmeta JSON, with ``direction`` stated.

Model averaging (Hoeting et al. 1999; RoBMA): with prior model probabilities :math:`\\pi_m` and
marginal likelihoods :math:`p(y \\mid m)`, :math:`P(m \\mid y) \\propto \\pi_m\\,p(y \\mid m)`; the
averaged posterior of mu is :math:`\\sum_m P(m \\mid y)\\, p(\\mu \\mid y, m)`, where models without
the effect contribute a point mass at 0. The inclusion Bayes factor of a component is its
posterior odds over its prior odds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from analysis.config import INTERVAL_KIND
from analysis.dataset.load import Outcome
from models.bias_models import BiasModel, EnsemblePriors
from models.exact.cube import CubeIntegral

__all__ = ["BiasAveragedResult", "ModelFit", "averaged_summary", "marginal_values", "posterior_probs"]

Summary = dict[str, float]
_PROBS = np.array([0.025, 0.5, 0.975])
#: Values within this distance of 0 are reported as 0 in quantiles of a distribution with a spike at 0.
_SPIKE_TOL = 1e-9
COMPONENTS = ("effect", "heterogeneity", "bias")


def _weighted_quantiles(values: np.ndarray, mass: np.ndarray, probs: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    v, m = values[order], mass[order]
    mid = np.cumsum(m) - m / 2.0
    return np.interp(probs, mid, v)


def _summary(mean: float, sd: float, q: np.ndarray) -> Summary:
    return {"mean": mean, "sd": sd, "median": float(q[1]), "q025": float(q[0]), "q975": float(q[2])}


#: Integration coordinate of each summarised parameter (:meth:`models.bias_models.BiasModel.axes`).
_AXIS = {"mu": "mu", "tau": "log_tau"}
#: Points of a marginal CDF on the parameter's own scale (resampled from the tabulated coordinates).
N_VALUES = 2001


def marginal_values(model: BiasModel, integral: CubeIntegral, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Marginal posterior CDF of ``mu`` or ``tau`` on its own scale: ``(values, cdf)``.

    The tabulated marginal is linear between its points in the integration coordinate (the prior
    CDF of mu, log tau), so it is resampled there at :data:`N_VALUES` points before being mapped to
    the parameter's scale, where a CDF is then interpolated linearly (quantiles, model averaging).
    """
    c, cdf = integral.axis_cdf(model.axes().index(_AXIS[name]))
    fine = np.linspace(c[0], c[-1], N_VALUES)
    cdf = np.interp(fine, c, cdf)
    values = model.priors.mu.ppf(fine) if name == "mu" else np.exp(fine)
    keep = np.isfinite(values)
    return values[keep], cdf[keep]


@dataclass
class ModelFit:
    """One model's posterior (benefit scale) and marginal likelihood.

    Attributes
    ----------
    model : BiasModel
    log_marginal_likelihood : float
    quadrature_error : float
        Estimated absolute error of the log marginal likelihood (:class:`models.exact.cube.CubeIntegral`).
    summaries : dict
        Parameter -> summary for the free parameters (``mu``, ``tau``, ``PET``, ``PEESE``,
        ``omega2..omegaJ``). Means and SDs are quadrature-exact; the quantiles of mu and tau (and
        of omega2 when the first weight fraction was tabulated) come from tabulated marginals,
        the others are weighted quantiles of the grid nodes (approximate, for display).
    marginals : dict
        ``mu`` / ``tau`` -> ``(values, cdf)`` of the marginal posterior on a fine grid (free
        parameters only; not serialised).
    """

    model: BiasModel
    log_marginal_likelihood: float
    quadrature_error: float
    summaries: dict[str, Summary]
    marginals: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_integral(cls, model: BiasModel, integral: CubeIntegral) -> ModelFit:
        """Summaries and marginals of a model from its quadrature."""
        axes = model.axes()
        par = model.parameters(integral.nodes)
        mass = integral.mass()
        summaries, marginals = {}, {}
        for name in ("mu", "tau"):
            if _AXIS[name] not in axes:
                continue
            values, cdf = marginal_values(model, integral, name)
            marginals[name] = (values, cdf)
            mean, sd = integral.expectation(par[name])
            summaries[name] = _summary(mean, sd, np.interp(_PROBS, cdf, values))
        omega2_tabulated = "v1" in axes and axes.index("v1") in integral.marginals
        if omega2_tabulated:  # omega2 = 1 - v1: its quantiles from the tabulated marginal of v1
            c, cdf = integral.axis_cdf(axes.index("v1"))
            mean, sd = integral.expectation(par["omega2"])
            summaries["omega2"] = _summary(mean, sd, 1.0 - np.interp(1.0 - _PROBS, cdf, c))
        extra = [p for p in ("PET", "PEESE") if p in par]
        first = 3 if omega2_tabulated else 2
        extra += [f"omega{j}" for j in range(first, len(model.cutpoints) + 2)]
        for name in extra:  # quantiles of a function of several axes: weighted over the grid (approximate)
            values = np.broadcast_to(par[name], mass.shape).ravel()
            mean, sd = integral.expectation(par[name])
            summaries[name] = _summary(mean, sd, _weighted_quantiles(values, mass.ravel(), _PROBS))
        return cls(model, integral.log_evidence, integral.error, summaries, marginals)

    @property
    def name(self) -> str:
        """The model's name (:attr:`models.bias_models.BiasModel.name`)."""
        return self.model.name


def posterior_probs(fits: list[ModelFit]) -> np.ndarray:
    """Posterior model probabilities ``P(m | y)``."""
    log_p = np.array([np.log(f.model.prior_prob) + f.log_marginal_likelihood for f in fits])
    p = np.exp(log_p - log_p.max())
    return p / p.sum()


def _mixture_cdf(fits: list[ModelFit], probs: np.ndarray, param: str, x: np.ndarray) -> np.ndarray:
    total = np.zeros_like(x)
    for fit, p in zip(fits, probs, strict=True):
        if param in fit.marginals:
            values, cdf = fit.marginals[param]
            total += p * np.interp(x, values, cdf, left=0.0, right=1.0)
        else:
            total += p * (x >= 0.0)
    return total


def averaged_summary(fits: list[ModelFit], param: str) -> Summary:
    """Model-averaged summary of ``mu`` or ``tau`` (benefit scale; spikes at 0 included)."""
    probs = posterior_probs(fits)
    means = np.array([f.summaries[param]["mean"] if param in f.summaries else 0.0 for f in fits])
    sds = np.array([f.summaries[param]["sd"] if param in f.summaries else 0.0 for f in fits])
    mean = float(probs @ means)
    sd = float(np.sqrt(max(probs @ (sds**2 + means**2) - mean**2, 0.0)))
    grids = [f.marginals[param][0] for f in fits if param in f.marginals]
    x = np.unique(np.concatenate([*grids, [-_SPIKE_TOL, 0.0]]))
    cdf = _mixture_cdf(fits, probs, param, x) + np.arange(x.size) * 1e-15  # strictly increasing
    q = np.interp(_PROBS, cdf, x)
    return _summary(mean, sd, np.where(np.abs(q) <= _SPIKE_TOL, 0.0, q))


def _natural(s: Summary, direction: int) -> Summary:
    if direction > 0:
        return dict(s)
    return {"mean": -s["mean"], "sd": s["sd"], "median": -s["median"], "q025": -s["q975"], "q975": -s["q025"]}


@dataclass
class BiasAveragedResult:
    """The bias-averaged analysis of one outcome.

    Attributes
    ----------
    dataset, provenance, measure : str
    outcome : Outcome
    priors : EnsemblePriors
    models : list of ModelFit
        Every model of the ensemble, in ensemble order.
    mu, tau : dict
        Model-averaged summaries on the benefit scale.
    predictor, test : str
        PET predictor (``sqrt_inv_n`` or ``sei``) and the selection models' test (``t`` or ``z``).
    studies : list of str
    notes : list of str
    """

    dataset: str
    provenance: str
    outcome: Outcome
    measure: str
    priors: EnsemblePriors
    models: list[ModelFit]
    mu: Summary
    tau: Summary
    predictor: str
    test: str
    studies: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.studies)

    @property
    def posterior_probs(self) -> np.ndarray:
        """``P(m | y)`` in ensemble order."""
        return posterior_probs(self.models)

    def _includes(self, component: str) -> np.ndarray:
        if component == "effect":
            return np.array([f.model.effect for f in self.models])
        if component == "heterogeneity":
            return np.array([f.model.heterogeneity for f in self.models])
        return np.array([f.model.bias != "none" for f in self.models])

    def inclusion(self, component: str) -> dict[str, float]:
        """Prior and posterior probability and inclusion Bayes factor of ``effect``, ``heterogeneity`` or ``bias``.

        The Bayes factor is computed from log marginal likelihoods (log-sum-exp over the models
        with and without the component), so it stays exact where a posterior probability rounds to 1.
        """
        inc = self._includes(component)
        prior_in = float(sum(f.model.prior_prob for f, i in zip(self.models, inc, strict=True) if i))
        post = float(self.posterior_probs[inc].sum())
        if prior_in in (0.0, 1.0):
            return {"prior_prob": prior_in, "posterior_prob": post, "inclusion_bf": float("nan")}
        log_w = np.array([np.log(f.model.prior_prob) + f.log_marginal_likelihood for f in self.models])
        log_post_odds = logsumexp(log_w[inc]) - logsumexp(log_w[~inc])
        log_bf = log_post_odds - np.log(prior_in / (1.0 - prior_in))
        return {"prior_prob": prior_in, "posterior_prob": post, "inclusion_bf": float(np.exp(min(log_bf, 700.0)))}

    @property
    def inclusion_bf(self) -> dict[str, float]:
        """Inclusion Bayes factor of each component."""
        return {c: self.inclusion(c)["inclusion_bf"] for c in COMPONENTS}

    def single(self, name: str) -> ModelFit:
        """The fit of one model by name (e.g. ``"mu+tau+none"``, the unadjusted model)."""
        for fit in self.models:
            if fit.name == name:
                return fit
        raise KeyError(f"no model {name!r}; models: {[f.name for f in self.models]}")

    @property
    def unadjusted(self) -> Summary:
        """mu of the random-effects model without bias (same priors), benefit scale."""
        return self.single("mu+tau+none").summaries["mu"]

    @property
    def conditional_mu(self) -> Summary:
        """mu averaged over the models with an effect only (RoBMA's conditional estimate), benefit scale."""
        return averaged_summary([f for f in self.models if f.model.effect], "mu")

    @property
    def prob_benefit(self) -> float:
        """Model-averaged ``P(mu > 0 | y)`` on the benefit scale (the spike counts as no benefit)."""
        probs = self.posterior_probs
        total = 0.0
        for fit, p in zip(self.models, probs, strict=True):
            if "mu" in fit.marginals:
                values, cdf = fit.marginals["mu"]
                total += p * (1.0 - float(np.interp(0.0, values, cdf, left=0.0, right=1.0)))
        return float(total)

    def to_dict(self) -> dict:
        """JSON-ready dict (``model = "bias-averaged"``): ``mu``, ``tau``, ``inclusion_bf``, ``models``."""
        d = self.outcome.direction
        probs = self.posterior_probs
        models = []
        for fit, p in zip(self.models, probs, strict=True):
            summaries = {k: (_natural(v, d) if k == "mu" else dict(v)) for k, v in fit.summaries.items()}
            models.append(
                {
                    "name": fit.name,
                    "effect": fit.model.effect,
                    "heterogeneity": fit.model.heterogeneity,
                    "bias": fit.model.bias_name,
                    "prior_prob": fit.model.prior_prob,
                    "posterior_prob": float(p),
                    "log_marginal_likelihood": fit.log_marginal_likelihood,
                    "quadrature_error": fit.quadrature_error,
                    "posterior": summaries,
                }
            )
        return {
            "dataset": self.dataset,
            "provenance": self.provenance,
            "outcome": self.outcome.id,
            "outcome_label": self.outcome.label,
            "direction": d,
            "model": "bias-averaged",
            "measure": self.measure,
            "k": self.k,
            "interval": INTERVAL_KIND,
            "engine": "exact (adaptive quadrature)",
            "mu": _natural(self.mu, d),
            "tau": dict(self.tau),
            "mu_unadjusted": _natural(self.unadjusted, d),
            "mu_conditional": _natural(self.conditional_mu, d),
            "prob_benefit": self.prob_benefit,
            "inclusion_bf": self.inclusion_bf,
            "components": {c: self.inclusion(c) for c in COMPONENTS},
            "models": models,
            "priors": {
                "mu": str(self.priors.mu),
                "tau": str(self.priors.tau),
                "PET": str(self.priors.pet),
                "PEESE": str(self.priors.peese),
                "omega": f"cumulative Dirichlet({self.priors.alpha:g}, ...)",
                "cutpoints": [list(c) for c in self.priors.cutpoint_sets],
                "bias_kinds": list(self.priors.bias),
            },
            "pet_predictor": self.predictor,
            "selection_test": self.test,
            "studies": list(self.studies),
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        return format_bias_averaged(self)


def _fmt(s: Summary) -> str:
    return f"{s['mean']:.3f} (median {s['median']:.3f}; eti95 {s['q025']:.3f} to {s['q975']:.3f})"


def _bf(x: float) -> str:
    return "n/a" if not np.isfinite(x) else (f"{x:.3g}" if 1e-3 <= x <= 1e4 else f"{x:.2e}")


def format_bias_averaged(result: BiasAveragedResult) -> str:
    """Report text (RoBMA's summary layout: components, model-averaged estimates, models)."""
    o, d = result.outcome, result.outcome.direction
    banner = "  [SIMULATED DATA]" if result.provenance == "simulated" else ""
    test = "each study's two-sample t-test" if result.test == "t" else "the normal test of y/SE"
    lines = [
        f"Bayesian model averaging over effect, heterogeneity and publication bias{banner}",
        f"dataset: {result.dataset}   outcome: {o.id} ({o.label}; {'higher' if d > 0 else 'lower'} is better)",
        f"k = {result.k} studies; priors: mu ~ {result.priors.mu}, tau ~ {result.priors.tau}, "
        f"PET ~ {result.priors.pet} on {result.predictor}, PEESE ~ {result.priors.peese}, "
        f"selection weights ~ cumulative Dirichlet({result.priors.alpha:g}) on one-sided p-values of {test}",
        f"intervals: 95% equal-tailed ({INTERVAL_KIND}); engine: exact (adaptive quadrature, no sampling)",
        "",
        "component        prior   posterior   inclusion BF",
    ]
    for c in COMPONENTS:
        inc = result.inclusion(c)
        lines.append(f"{c:<15} {inc['prior_prob']:7.3f} {inc['posterior_prob']:11.3f}   {_bf(inc['inclusion_bf'])}")
    lines += [
        "",
        f"model-averaged mu   = {_fmt(_natural(result.mu, d))}",
        f"conditional mu      = {_fmt(_natural(result.conditional_mu, d))}  (models with an effect)",
        f"unadjusted mu       = {_fmt(_natural(result.unadjusted, d))}  (random effects, same priors)",
        f"model-averaged tau  = {_fmt(result.tau)}",
        f"P(benefit)          = {result.prob_benefit:.3f}",
        "",
        f"{'model':<34} {'prior':>7} {'posterior':>10} {'log ML':>9}",
    ]
    for fit, p in zip(result.models, result.posterior_probs, strict=True):
        lines.append(f"{fit.name:<34} {fit.model.prior_prob:7.4f} {p:10.4f} {fit.log_marginal_likelihood:9.3f}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
