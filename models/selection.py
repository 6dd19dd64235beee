r"""Monotone step-function selection on one-sided p-values (Vevea & Hedges 1995; RoBMA-PSMA).

A study whose one-sided p-value in the direction of benefit falls in interval :math:`j`
(cut-points :math:`0 < a_1 < \dots < a_{J-1} < 1`, interval 1 the most significant) is
published with relative probability :math:`\omega_j`, with

.. math::

    1 = \omega_1 \ge \omega_2 \ge \dots \ge \omega_J \ge 0, \qquad
    (e_1, \dots, e_J) = (\omega_1 - \omega_2, \dots, \omega_{J-1} - \omega_J, \omega_J)
    \sim \text{Dirichlet}(\alpha_1, \dots, \alpha_J),

the cumulative Dirichlet prior of RoBMA (Bartoš et al. 2023, Res Synth Methods 14:99; default
:math:`\alpha = 1`: uniform on the ordered weights). Selection can only disfavour less
significant results, never favour them.

**Which p-value.** The p-value a study's authors saw is that of their own test. For a
standardised mean difference from two groups of :math:`n_t, n_c` animals it is the two-sample
t-test, :math:`t_i = d_i / \sqrt{1/\tilde n_i}` with :math:`\tilde n_i = n_t n_c/(n_t + n_c)` and
:math:`\nu_i = n_t + n_c - 2` degrees of freedom; Hedges' :math:`g_i = J(\nu_i) d_i`, so study
:math:`i` lies in an interval at least as significant as :math:`j` iff

.. math::

    y_i \ge c_{ij} = J(\nu_i)\, \sqrt{1/\tilde n_i}\; t^{-1}_{\nu_i}(1 - a_j).

Without group sizes (effect-level data) the normal test :math:`c_{ij} = s_i\, z_{1 - a_j}`
is used, as RoBMA does (:func:`normal_thresholds`).

**Likelihood** of a published study with :math:`\sigma_i^2 = v_i + \tau^2` (study effect
integrated out) and :math:`F_{ij} = P(y_i \ge c_{ij}) = \Phi((\mu - c_{ij})/\sigma_i)`:

.. math::

    p(y_i \mid \mu, \tau, \omega) = \frac{\mathcal N(y_i; \mu, \sigma_i^2)\, \omega_{j(i)}}
      {\sum_{j=1}^{J} \omega_j (F_{ij} - F_{i,j-1})}
    = \frac{\mathcal N(y_i; \mu, \sigma_i^2)\, \omega_{j(i)}}{\sum_{j=1}^{J-1} e_j F_{ij} + e_J},

(:math:`F_{i0} = 0, F_{iJ} = 1`). :math:`\mu, \tau` describe the effects before selection.

This module only evaluates; it does no fitting and no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from scipy import special, stats

__all__ = [
    "CUTPOINT_SETS",
    "check_cutpoints",
    "hedges_j",
    "interval_index",
    "interval_labels",
    "normal_thresholds",
    "omega_from_increments",
    "selection_log_lik",
    "stick_breaking",
    "t_test_p",
    "t_thresholds",
]

#: The two default selection models: significance at 0.025 (two-sided 0.05) with a step at 0.05,
#: and significance at 0.05 with a step at 0.5 (the direction of the effect).
CUTPOINT_SETS: tuple[tuple[float, ...], ...] = ((0.025, 0.05), (0.05, 0.5))


def check_cutpoints(cutpoints: Sequence[float]) -> np.ndarray:
    """Validated cut-points (strictly increasing one-sided p-values in (0, 1))."""
    a = np.asarray(cutpoints, dtype=float)
    if a.ndim != 1 or a.size == 0 or np.any(a <= 0) or np.any(a >= 1) or np.any(np.diff(a) <= 0):
        raise ValueError(f"cutpoints must be strictly increasing one-sided p-values in (0, 1), got {list(cutpoints)}")
    return a


def interval_labels(cutpoints: Sequence[float]) -> list[str]:
    """Labels of the p-value intervals, e.g. ``["p<=0.025", "0.025<p<=0.05", "p>0.05"]``."""
    a = [f"{c:g}" for c in check_cutpoints(cutpoints)]
    return [f"p<={a[0]}", *(f"{lo}<p<={hi}" for lo, hi in pairwise(a)), f"p>{a[-1]}"]


def normal_thresholds(sei: np.ndarray, cutpoints: Sequence[float]) -> np.ndarray:
    """``(k, J-1)`` thresholds ``c_ij = s_i z_{1-a_j}`` of the normal test of ``y_i / s_i``."""
    a = check_cutpoints(cutpoints)
    return np.asarray(sei, dtype=float)[:, None] * stats.norm.isf(a)[None, :]


def t_thresholds(n_treatment: np.ndarray, n_control: np.ndarray, cutpoints: Sequence[float]) -> np.ndarray:
    """``(k, J-1)`` thresholds on Hedges' g of each study's own one-sided two-sample t-test."""
    a = check_cutpoints(cutpoints)
    nt, nc = np.asarray(n_treatment, dtype=float), np.asarray(n_control, dtype=float)
    if nt.shape != nc.shape or not np.all((nt >= 2) & (nc >= 2)):
        raise ValueError("t-test thresholds need at least 2 animals per group in every study")
    df = nt + nc - 2.0
    return (hedges_j(df) * np.sqrt(1.0 / nt + 1.0 / nc))[:, None] * stats.t.isf(a[None, :], df[:, None])


def hedges_j(df: np.ndarray) -> np.ndarray:
    """Exact small-sample correction ``J(m) = Γ(m/2) / (sqrt(m/2) Γ((m-1)/2))`` of Hedges' g.

    The formula of :func:`analysis.dataset.smd.correction_j`, repeated here because ``models/``
    does not import from ``analysis/``; ``tests/test_bias_models.py`` checks the thresholds
    against the t-test p-values of g computed the dataset's way.
    """
    df = np.asarray(df, dtype=float)
    return np.exp(special.gammaln(df / 2.0) - special.gammaln((df - 1.0) / 2.0)) / np.sqrt(df / 2.0)


def t_test_p(yi: np.ndarray, n_treatment: np.ndarray, n_control: np.ndarray) -> np.ndarray:
    """One-sided p-value (direction of ``yi``) of each study's two-sample t-test, from Hedges' g."""
    nt, nc = np.asarray(n_treatment, dtype=float), np.asarray(n_control, dtype=float)
    df = nt + nc - 2.0
    t = np.asarray(yi, dtype=float) / (hedges_j(df) * np.sqrt(1.0 / nt + 1.0 / nc))
    return stats.t.sf(t, df)


def interval_index(yi: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0-based interval of each study (0 = most significant): the number of thresholds above ``y_i``."""
    return np.sum(np.asarray(yi, dtype=float)[:, None] < thresholds, axis=1)


def stick_breaking(fractions: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Dirichlet increments ``e_1..e_J`` from ``J - 1`` stick-breaking fractions ``v_j`` in [0, 1].

    ``e_j = v_j prod_{l<j} (1 - v_l)`` and ``e_J = prod_l (1 - v_l)``; with
    ``v_j ~ Beta(alpha_j, sum_{l>j} alpha_l)`` independent, ``e ~ Dirichlet(alpha)``. The arrays
    broadcast against each other.
    """
    if not fractions:
        raise ValueError("need at least one stick-breaking fraction")
    rest, out = 1.0, []
    for v in fractions:
        v = np.asarray(v, dtype=float)
        out.append(rest * v)
        rest = rest * (1.0 - v)
    return [*out, rest]


def omega_from_increments(increments: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Weights ``omega_j = sum_{l >= j} e_l`` (``omega_1 = 1``) from the increments."""
    arrays = np.broadcast_arrays(*[np.asarray(e, dtype=float) for e in increments])
    return list(np.cumsum(np.stack(arrays)[::-1], axis=0)[::-1])


def selection_log_lik(
    yi: np.ndarray,
    vi: np.ndarray,
    thresholds: np.ndarray,
    mu: np.ndarray,
    tau: np.ndarray,
    increments: Sequence[np.ndarray],
) -> np.ndarray:
    """Summed log-likelihood of the published studies on a grid of (mu, tau, increments).

    Parameters
    ----------
    yi, vi : numpy.ndarray
        Benefit-oriented effects and sampling variances (length ``k``).
    thresholds : numpy.ndarray
        ``(k, J-1)`` thresholds on the ``y`` scale (:func:`t_thresholds`, :func:`normal_thresholds`).
    mu, tau : numpy.ndarray
        Broadcastable grids of the parameters (any shape ``G``).
    increments : sequence of numpy.ndarray
        ``J`` Dirichlet increments ``e_j``, each broadcastable to ``G``.

    Returns
    -------
    numpy.ndarray
        Log-likelihood, shape ``G`` (broadcast of ``mu``, ``tau`` and the increments).
    """
    y, v = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    e = [np.asarray(x, dtype=float) for x in increments]
    omega = omega_from_increments(e)
    which = interval_index(y, thresholds)
    counts = np.bincount(which, minlength=len(e))
    shape = np.broadcast_shapes(np.shape(mu), np.shape(tau), *(x.shape for x in e))
    total = np.zeros(shape)
    with np.errstate(divide="ignore"):
        for j, n in enumerate(counts):
            if n:
                total = total + n * np.log(omega[j])
    mu, tau = np.asarray(mu, dtype=float)[..., None], np.asarray(tau, dtype=float)[..., None]
    sigma = np.sqrt(v + tau**2)
    total = total + np.sum(stats.norm.logpdf(y, mu, sigma), axis=-1)
    norm = e[-1][..., None] * np.ones_like(sigma)
    for j in range(thresholds.shape[1]):
        norm = norm + e[j][..., None] * special.ndtr((mu - thresholds[:, j]) / sigma)
    return total - np.sum(np.log(norm), axis=-1)
