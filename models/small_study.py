r"""Small-study-effect models: PET/PEESE meta-regressions on a study's imprecision.

**PET / PEESE** (precision-effect test / precision-effect estimate with standard error;
Stanley & Doucouliagos 2014) are normal–normal meta-regressions on a study's imprecision
:math:`s_i`:

.. math::

    y_i \mid \theta_i \sim \mathcal N(\theta_i, v_i), \qquad
    \theta_i \sim \mathcal N(\beta_0 + \beta_1 s_i,\ \tau^2)   \quad\text{(PET)}, \qquad
    \theta_i \sim \mathcal N(\beta_0 + \beta_1 s_i^2,\ \tau^2) \quad\text{(PEESE)},

with :math:`\beta_0 \sim \mathcal N(0, 3^2)`, :math:`\beta_1 \sim \mathcal N(0, S_1^2)`,
:math:`\tau \sim p(\tau)`. :math:`\beta_0` is the effect of an infinitely precise study
(:math:`s = 0`), PET's adjusted effect as a single model; :math:`\beta_1` is the small-study effect
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

The publication-bias selection models are in :mod:`models.selection` and the model-averaged
ensemble in :mod:`models.bias_models`.

This module only computes predictors and design matrices; it does no I/O and no fitting.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PREDICTORS", "predictor_values", "small_study_design"]

#: predictor name -> (regression kind, imprecision scale, description)
PREDICTORS: dict[str, tuple[str, str, str]] = {
    "sei": ("PET", "se", "standard error sqrt(vi)"),
    "vi": ("PEESE", "se", "sampling variance vi = sei^2"),
    "sqrt_inv_n": ("PET", "n", "sqrt(1/n~), n~ = n_t n_c / (n_t + n_c)"),
    "inv_n": ("PEESE", "n", "1/n~"),
}


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
