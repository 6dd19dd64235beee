r"""Small-study-effect models: PET/PEESE meta-regressions and a step-function selection model.

**PET / PEESE** (precision-effect test / precision-effect estimate with standard error;
Stanley & Doucouliagos 2014) are normal–normal meta-regressions on a study's imprecision
:math:`s_i`:

.. math::

    y_i \mid \theta_i \sim \mathcal N(\theta_i, v_i), \qquad
    \theta_i \sim \mathcal N(\beta_0 + \beta_1 s_i,\ \tau^2)   \quad\text{(PET)}, \qquad
    \theta_i \sim \mathcal N(\beta_0 + \beta_1 s_i^2,\ \tau^2) \quad\text{(PEESE)},

with :math:`\beta_0 \sim \mathcal N(0, 3^2)`, :math:`\beta_1 \sim \mathcal N(0, S_1^2)`,
:math:`\tau \sim p(\tau)`. :math:`\beta_0` is the effect of an infinitely precise study
(:math:`s = 0`), the bias-adjusted pooled effect; :math:`\beta_1` is the small-study effect
(:math:`\beta_1 > 0` on the benefit scale = small studies report larger benefits). These are
linear meta-regressions, so :func:`models.exact.posterior.exact_posterior` (with ``X``) gives the exact
posterior and :func:`models.random_effects.build_random_effects_model` the NUTS graph.

Two imprecision scales are offered (:data:`PREDICTORS`):

* ``sei`` / ``vi``: the standard error :math:`s_i = \sqrt{v_i}` (PET) and :math:`v_i` (PEESE),
  as Egger's test;
* ``sqrt_inv_n`` / ``inv_n``: :math:`s_i = \sqrt{1/\tilde n_i}` and :math:`1/\tilde n_i`, with
  :math:`\tilde n_i = n_{t,i} n_{c,i} / (n_{t,i} + n_{c,i})`. For an SMD,
  :math:`v_i = 1/\tilde n_i + g_i^2 / (2 N_i)`: the SE grows with the effect itself, so in small
  animal studies a large true effect alone makes SE and g correlated and fakes funnel asymmetry
  (Zwetsloot et al. 2017, eLife 6:e24260). :math:`\sqrt{1/\tilde n_i}` is the part of the SE
  that does not depend on :math:`g_i`.

**Step-function selection model** (Hedges 1992; Vevea & Hedges 1995), on the
benefit-oriented scale (:math:`y_i` multiplied by the outcome's direction). The one-sided
p-value of study :math:`i` in the direction of benefit is :math:`p_i = 1 - \Phi(y_i / s_i)`;
cut-points :math:`0 < a_1 < \dots < a_{J-1} < 1` (default 0.025, 0.5) split it into :math:`J`
intervals, interval 1 the most significant. A study in interval :math:`j` is published with
relative probability :math:`\omega_j`, :math:`\omega_1 = 1`. With
:math:`\sigma_i^2 = v_i + \tau^2` and thresholds :math:`c_{ij} = s_i\,\Phi^{-1}(1 - a_j)` on the
y scale (:math:`c_{i0} = +\infty`, :math:`c_{iJ} = -\infty`), the published-study likelihood is

.. math::

    p(y_i \mid \mu, \tau, \omega) =
      \frac{\mathcal N(y_i;\ \mu, \sigma_i^2)\ \omega_{j(i)}}{\sum_{j=1}^{J} \omega_j P_{ij}},
    \qquad
    P_{ij} = \Phi\!\left(\frac{\mu - c_{ij}}{\sigma_i}\right)
           - \Phi\!\left(\frac{\mu - c_{i,j-1}}{\sigma_i}\right),

with :math:`\theta_i` integrated out (the marginal model: no funnel geometry), and
:math:`P_{ij}` the probability that a study of this variance lands in interval :math:`j`.
:math:`\mu, \tau` describe the effects *before* selection (the adjusted pooled effect).

Priors: :math:`\mu \sim \mathcal N(0, 3^2)`, :math:`\tau \sim` HalfNormal(1) (the evmeta
defaults) and :math:`\omega_j \sim \text{LogNormal}(0, 1)` independently for :math:`j \ge 2`.
The log-normal is symmetric about :math:`\omega = 1` (no selection) on the log scale, so
:math:`P(\omega_2 < 1) = 0.5` a priori and the posterior probability is directly readable as
evidence for selection against non-significant results (posterior odds / prior odds = Bayes
factor of :math:`\omega_2 < 1` vs :math:`\omega_2 > 1`); its 95% range 0.14–7.1 allows strong
selection. Beta or Uniform(0, 1) priors would force :math:`\omega_j \le 1` and make
:math:`P(\omega_2 < 1) = 1` by construction, so they cannot express evidence of selection.

This module only builds graphs and evaluates densities; it does no I/O and no fitting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy import stats

from models.priors import DEFAULT_MU_PRIOR, DEFAULT_OMEGA_SIGMA, DEFAULT_TAU_PRIOR, PriorSpec

__all__ = [
    "DEFAULT_CUTPOINTS",
    "DEFAULT_OMEGA_SIGMA",
    "PREDICTORS",
    "build_selection_model",
    "interval_labels",
    "p_interval",
    "predictor_values",
    "selection_log_likelihood",
    "small_study_design",
]

#: predictor name -> (regression kind, imprecision scale, description)
PREDICTORS: dict[str, tuple[str, str, str]] = {
    "sei": ("PET", "se", "standard error sqrt(vi)"),
    "vi": ("PEESE", "se", "sampling variance vi = sei^2"),
    "sqrt_inv_n": ("PET", "n", "sqrt(1/n~), n~ = n_t n_c / (n_t + n_c)"),
    "inv_n": ("PEESE", "n", "1/n~"),
}
DEFAULT_CUTPOINTS: tuple[float, ...] = (0.025, 0.5)


def predictor_values(
    predictor: str, vi: np.ndarray, n_treatment: np.ndarray | None = None, n_control: np.ndarray | None = None
) -> np.ndarray:
    """Values of a small-study predictor (see :data:`PREDICTORS`) for each study.

    Raises
    ------
    ValueError
        For an unknown predictor, or an ``n``-based predictor without valid group sizes.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {list(PREDICTORS)}, got {predictor!r}")
    v = np.asarray(vi, dtype=float)
    if predictor == "sei":
        return np.sqrt(v)
    if predictor == "vi":
        return v
    if n_treatment is None or n_control is None:
        raise ValueError(f"predictor {predictor!r} needs n_treatment and n_control")
    nt, nc = np.asarray(n_treatment, dtype=float), np.asarray(n_control, dtype=float)
    if nt.shape != v.shape or nc.shape != v.shape or not np.all((nt > 0) & (nc > 0)):
        raise ValueError(f"predictor {predictor!r} needs positive group sizes for every study")
    inv_n = (nt + nc) / (nt * nc)
    return np.sqrt(inv_n) if predictor == "sqrt_inv_n" else inv_n


def small_study_design(values: np.ndarray, predictor: str) -> tuple[np.ndarray, list[str]]:
    """Design matrix ``[1, values]`` and coefficient names ``["intercept", predictor]``."""
    x = np.asarray(values, dtype=float)
    return np.column_stack([np.ones(x.size), x]), ["intercept", predictor]


def _check_cutpoints(cutpoints: Sequence[float]) -> np.ndarray:
    a = np.asarray(cutpoints, dtype=float)
    if a.ndim != 1 or a.size == 0 or np.any(a <= 0) or np.any(a >= 1) or np.any(np.diff(a) <= 0):
        raise ValueError(f"cutpoints must be strictly increasing one-sided p-values in (0, 1), got {list(cutpoints)}")
    return a


def interval_labels(cutpoints: Sequence[float]) -> list[str]:
    """Labels of the p-value intervals, e.g. ``["p<=0.025", "0.025<p<=0.5", "p>0.5"]``."""
    a = [f"{c:g}" for c in _check_cutpoints(cutpoints)]
    middle = [f"{lo}<p<={hi}" for lo, hi in pairwise(a)]
    return [f"p<={a[0]}", *middle, f"p>{a[-1]}"]


def p_interval(yi: np.ndarray, sei: np.ndarray, cutpoints: Sequence[float]) -> np.ndarray:
    """0-based interval index of each study's one-sided p-value ``1 - Φ(y/s)`` (0 = most significant)."""
    a = _check_cutpoints(cutpoints)
    p = stats.norm.sf(np.asarray(yi, dtype=float) / np.asarray(sei, dtype=float))
    return np.searchsorted(a, p, side="left")


def selection_log_likelihood(
    yi: np.ndarray, vi: np.ndarray, *, mu: float, tau: float, omega: Sequence[float], cutpoints: Sequence[float]
) -> np.ndarray:
    """Per-study log-likelihood of the step-function selection model (NumPy/SciPy reference).

    ``omega`` has one weight per interval (``omega[0] = 1`` by convention); ``yi`` is
    benefit-oriented. Used to test the PyMC graph.
    """
    a = _check_cutpoints(cutpoints)
    y, v = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    s, sigma, w = np.sqrt(v), np.sqrt(v + tau**2), np.asarray(omega, dtype=float)
    c = s[:, None] * stats.norm.isf(a)[None, :]
    cdf = np.column_stack([np.zeros(y.size), stats.norm.cdf((mu - c) / sigma[:, None]), np.ones(y.size)])
    norm_const = np.diff(cdf, axis=1) @ w
    j = p_interval(y, s, a)
    return stats.norm.logpdf(y, mu, sigma) + np.log(w[j]) - np.log(norm_const)


def _selection_logp(cutpoints: np.ndarray) -> Callable[..., pt.TensorVariable]:
    z = stats.norm.isf(cutpoints)

    def logp(
        value: pt.TensorVariable,
        mu: pt.TensorVariable,
        sigma: pt.TensorVariable,
        sei: pt.TensorVariable,
        *omegas: pt.TensorVariable,
    ) -> pt.TensorVariable:
        weights = [pt.ones_like(value), *omegas]
        cdf = [pt.zeros_like(value)]
        cdf += [0.5 * pt.erfc(-(mu - sei * zj) / (sigma * np.sqrt(2.0))) for zj in z]
        cdf.append(pt.ones_like(value))
        norm_const = sum(w * (hi - lo) for w, (lo, hi) in zip(weights, pairwise(cdf), strict=True))
        log_w = pt.zeros_like(value)
        for zj, w in zip(z, omegas, strict=True):  # value below threshold j: at least interval j + 1
            log_w = pt.switch(value <= sei * zj, pt.log(w), log_w)
        normal = -0.5 * ((value - mu) / sigma) ** 2 - pt.log(sigma) - 0.5 * np.log(2.0 * np.pi)
        return normal + log_w - pt.log(norm_const)

    return logp


def build_selection_model(
    yi: np.ndarray,
    vi: np.ndarray,
    *,
    study: Sequence[str],
    cutpoints: Sequence[float] = DEFAULT_CUTPOINTS,
    tau_prior: PriorSpec = DEFAULT_TAU_PRIOR,
    mu_prior: PriorSpec = DEFAULT_MU_PRIOR,
    omega_sigma: float = DEFAULT_OMEGA_SIGMA,
) -> pm.Model:
    """Build the step-function selection model (θ integrated out) for NUTS.

    Parameters
    ----------
    yi, vi : numpy.ndarray
        Benefit-oriented effects (``direction * y``) and their sampling variances.
    study : sequence of str
        Study labels (dimension ``study``).
    cutpoints : sequence of float
        One-sided p-value cut-points in the direction of benefit (default 0.025, 0.5).
    tau_prior, mu_prior : PriorSpec
        Priors of the between-study SD (on [0, inf)) and of the adjusted pooled effect (any).
    omega_sigma : float
        SD of ``log omega_j`` (``omega_j ~ LogNormal(0, omega_sigma)``, ``j >= 2``).

    Returns
    -------
    pymc.Model
        Free ``mu``, ``tau``, ``omega_free`` (dim ``selected_interval``); deterministic ``omega``
        (dim ``p_interval``, first entry 1); observed ``y`` (dim ``study``, a ``CustomDist``
        whose elementwise log-density is the selection-model likelihood above).
    """
    a = _check_cutpoints(cutpoints)
    y, v = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    if y.shape != v.shape or y.ndim != 1 or not np.all(v > 0) or len(study) != y.size:
        raise ValueError("yi, vi and study must have the same length and vi must be > 0")
    if not omega_sigma > 0:
        raise ValueError(f"omega_sigma must be > 0, got {omega_sigma}")
    tau_prior.require_positive("tau")
    labels = interval_labels(a)
    coords = {"study": list(study), "p_interval": labels, "selected_interval": labels[1:]}
    with pm.Model(coords=coords) as model:
        y_data = pm.Data("yi", y, dims="study")
        v_data = pm.Data("vi", v, dims="study")
        mu = mu_prior.to_pymc("mu")
        tau = tau_prior.to_pymc("tau")
        omega_free = pm.LogNormal("omega_free", mu=0.0, sigma=omega_sigma, dims="selected_interval")
        pm.Deterministic("omega", pt.concatenate([pt.ones(1), omega_free]), dims="p_interval")
        sigma = pt.sqrt(v_data + tau**2)
        omegas = [omega_free[j] for j in range(a.size)]
        pm.CustomDist("y", mu, sigma, pt.sqrt(v_data), *omegas, logp=_selection_logp(a), observed=y_data, dims="study")
    return model
