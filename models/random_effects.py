r"""Normal–normal hierarchical random-effects model (and its meta-regression) for NUTS in PyMC 6.

Model, for studies :math:`i = 1..k` with observed effects :math:`y_i` and known sampling
variances :math:`v_i`, design rows :math:`x_i` (a single 1 for plain random effects, so
:math:`\beta = \mu`):

.. math::

    y_i \mid \theta_i &\sim \mathcal N(\theta_i, v_i), \\
    \theta_i \mid \beta, \tau &\sim \mathcal N(x_i^\top \beta, \tau^2), \\
    \beta_j &\sim p(\beta_j) \text{ (normal)}, \qquad \tau \sim p(\tau).

NUTS samples the *marginal* model with :math:`\theta` integrated out,

.. math::

    y_i \mid \beta, \tau \sim \mathcal N\!\left(x_i^\top\beta,\; v_i + \tau^2\right),

which has no funnel geometry (hence no divergences from it). The study effects are then drawn
from their exact conditional (:func:`draw_theta`),

.. math::

    \theta_i \mid \beta, \tau, y \sim \mathcal N\!\left(
        \frac{y_i / v_i + x_i^\top\beta / \tau^2}{1/v_i + 1/\tau^2},\;
        \frac{1}{1/v_i + 1/\tau^2}\right),

and the prediction for a new study is :math:`\theta_{new} \sim \mathcal N(x_{new}^\top\beta, \tau^2)`.
:math:`I^2 = \tau^2 / (\tau^2 + s^2)` with :math:`s^2` the Higgins–Thompson typical within-study
variance.

This module only builds graphs and does the conditional draws; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models.exact.normal_model import typical_variance as typical_within_variance
from models.priors import PriorSpec

__all__ = ["build_random_effects_model", "draw_theta", "draw_theta_new", "i2_draws", "typical_within_variance"]


def build_random_effects_model(
    yi: np.ndarray,
    vi: np.ndarray,
    *,
    study: Sequence[str],
    tau_prior: PriorSpec,
    beta_priors: Sequence[PriorSpec],
    X: np.ndarray | None = None,
    coef_names: Sequence[str] = ("mu",),
) -> pm.Model:
    """Build the marginal (θ integrated out) random-effects / meta-regression model.

    Parameters
    ----------
    yi, vi : numpy.ndarray
        Observed effects and their sampling variances, one per study.
    study : sequence of str
        Study labels (the ``study`` dimension).
    tau_prior : PriorSpec
        Prior of the between-study SD; must live on ``[0, inf)``.
    beta_priors : sequence of PriorSpec
        One normal prior per coefficient (for plain random effects: the prior of ``mu``).
    X : numpy.ndarray, optional
        ``(k, p)`` design matrix; ``None`` means a column of ones (coefficient ``mu``).
    coef_names : sequence of str
        Coefficient names; ``("mu",)`` for plain random effects.

    Returns
    -------
    pymc.Model
        Free variables ``tau`` and either ``mu`` or ``beta`` (dim ``coef``); observed ``y`` (dim
        ``study``). Every data array is a ``pm.Data`` and nothing is computed from the data at
        build time, so one compiled model serves every data set of the same structure
        (:mod:`analysis.fitting.nuts`); ``I2`` is derived from the ``tau`` draws by :func:`i2_draws`.
    """
    yi, vi = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    X = np.ones((yi.size, 1)) if X is None else np.asarray(X, dtype=float)
    if X.shape != (yi.size, len(coef_names)) or len(beta_priors) != len(coef_names):
        raise ValueError(f"design {X.shape} does not match {yi.size} studies and coefficients {list(coef_names)}")
    tau_prior.require_positive("tau")
    coords = {"study": list(study)} | ({} if X.shape[1] == 1 and coef_names[0] == "mu" else {"coef": list(coef_names)})
    with pm.Model(coords=coords) as model:
        y_data = pm.Data("yi", yi, dims="study")
        v_data = pm.Data("vi", vi, dims="study")
        x_data = pm.Data("X", X)
        location = _linear_predictor(x_data, beta_priors, coef_names)
        tau = tau_prior.to_pymc("tau")
        pm.Normal("y", mu=location, sigma=pt.sqrt(v_data + tau**2), observed=y_data, dims="study")
    return model


def i2_draws(tau: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """``I² = τ² / (τ² + s²)`` per draw of ``tau``, with ``s²`` the Higgins–Thompson typical variance of ``vi``."""
    tau2 = np.asarray(tau, dtype=float) ** 2
    return tau2 / (tau2 + typical_within_variance(vi))


def _linear_predictor(
    x_data: pt.TensorVariable, beta_priors: Sequence[PriorSpec], coef_names: Sequence[str]
) -> pt.TensorVariable:
    """``mu`` (broadcast over studies) for plain random effects, else ``X @ beta``."""
    if len(coef_names) == 1 and coef_names[0] == "mu":
        return beta_priors[0].to_pymc("mu") * x_data[:, 0]
    betas = [prior.to_pymc(f"beta_{name}") for prior, name in zip(beta_priors, coef_names, strict=True)]
    beta = pm.Deterministic("beta", pt.stack(betas), dims="coef")
    return pt.dot(x_data, beta)


def draw_theta(
    yi: np.ndarray, vi: np.ndarray, location: np.ndarray, tau: np.ndarray, *, rng: np.random.Generator
) -> np.ndarray:
    """Draw study effects θ from their exact conditional given each posterior draw.

    Parameters
    ----------
    yi, vi : numpy.ndarray
        ``(k,)`` observed effects and sampling variances.
    location : numpy.ndarray
        ``(..., k)`` linear predictor ``x_i'β`` per posterior draw (``mu`` broadcast for
        plain random effects).
    tau : numpy.ndarray
        ``(...)`` between-study SD per posterior draw.
    rng : numpy.random.Generator
        Seeded generator.

    Returns
    -------
    numpy.ndarray
        ``(..., k)`` draws of θ.
    """
    # Floor tau^2 so that tau = 0 gives the limit theta_i = x_i'beta instead of 0/0.
    tau2 = np.maximum(np.asarray(tau, dtype=float)[..., None] ** 2, 1e-300)
    precision = 1.0 / vi + 1.0 / tau2
    mean = (yi / vi + location / tau2) / precision
    sd = np.sqrt(1.0 / precision)
    return mean + sd * rng.standard_normal(mean.shape)


def draw_theta_new(location_new: np.ndarray, tau: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Draw the effect of a new study, ``θ_new ~ N(x_new'β, τ²)``, once per posterior draw."""
    location_new = np.asarray(location_new, dtype=float)
    return location_new + np.asarray(tau, dtype=float) * rng.standard_normal(location_new.shape)
