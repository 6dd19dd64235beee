"""Vectorised numerics for the exact engine: a bracketed root finder and normal mixtures.

The marginal posterior of every location-type quantity in the normal-normal model (mu, a
regression coefficient, a prediction, a shrunken study effect) is a continuous mixture over tau of
normal distributions. On a quadrature grid tau_j with weights w_j (sum 1) it becomes the finite
mixture ``sum_j w_j N(m_j, s_j^2)``, whose density, CDF and moments are closed-form sums; its
quantiles solve ``CDF(x) = p`` with :func:`solve_monotone`. :class:`LocationMixture` holds the
nodes, weights and ``beta | tau, y`` moments; the nodes are the quadrature grid (exact) or
bayesmeta's DIRECT support (:mod:`models.exact.direct`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = [
    "SUMMARY_P",
    "LocationMixture",
    "mixture_cdf",
    "mixture_moments",
    "mixture_pdf",
    "mixture_quantile",
    "mixture_summary",
    "solve_monotone",
]

_SQRT_2PI = np.sqrt(2.0 * np.pi)
#: Half-width of the initial bracket of a mixture quantile, in component standard deviations.
_BRACKET_SDS = 12.0
_EPS4 = 4.0 * np.finfo(float).eps
#: Probabilities of the reported median and 95% equal-tailed interval.
SUMMARY_P = np.array([0.5, 0.025, 0.975])
#: Quadrature components lighter than this (relative to the heaviest) are dropped.
_WEIGHT_FLOOR = 1e-15


def solve_monotone(
    fun: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    target: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    x0: np.ndarray | None = None,
    *,
    xtol: float = 1e-13,
    maxiter: int = 200,
) -> np.ndarray:
    """Solve ``F(x) = target`` elementwise for a non-decreasing ``F`` on a bracket.

    Safeguarded Newton: a Newton step is taken when it stays inside the current bracket,
    otherwise the bracket is bisected, so convergence is guaranteed whenever
    ``F(lo) <= target <= F(hi)``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (F(x), F'(x))``, vectorised over arrays shaped like ``target``.
    target, lo, hi : numpy.ndarray
        Targets and bracket ends (broadcastable to one shape).
    x0 : numpy.ndarray, optional
        Starting values (clipped into the bracket); the bracket midpoint by default.
    xtol : float
        Relative tolerance on ``x``; an entry also stops once ``|F(x) - target|`` is at the
        rounding level of ``F``.
    maxiter : int
        Iteration cap.

    Returns
    -------
    numpy.ndarray
        The roots, shaped like the broadcast inputs.
    """
    target, lo, hi = (np.array(a, dtype=float) for a in np.broadcast_arrays(target, lo, hi))
    x = 0.5 * (lo + hi) if x0 is None else np.clip(np.broadcast_to(x0, lo.shape), lo, hi)
    done = np.zeros(x.shape, dtype=bool)
    for _ in range(maxiter):
        value, slope = fun(x)
        resid = value - target
        lo = np.where(resid < 0.0, x, lo)
        hi = np.where(resid >= 0.0, x, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = x - resid / slope
        inside = np.isfinite(newton) & (newton >= lo) & (newton <= hi)
        x_new = np.where(resid == 0.0, x, np.where(inside, newton, 0.5 * (lo + hi)))
        scale = xtol * (1.0 + np.abs(x_new))
        noise = _EPS4 * np.maximum(np.abs(target), np.abs(value))  # rounding level of F
        done |= (np.abs(x_new - x) <= scale) | (hi - lo <= scale) | (np.abs(resid) <= noise)
        x = np.where(done, x, x_new)  # converged entries stay frozen
        if np.all(done):
            break
    return x


def _standardise(x: np.ndarray, means: np.ndarray, sds: np.ndarray) -> np.ndarray:
    """z-scores of ``x`` (shape ``(m, q)``) under components ``(m, N)``: shape ``(m, q, N)``."""
    return (x[:, :, None] - means[:, None, :]) / sds[:, None, :]


def mixture_cdf(x: np.ndarray, means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """CDF of ``m`` normal mixtures at points ``x``.

    Parameters
    ----------
    x : numpy.ndarray
        Shape ``(m, q)``: ``q`` evaluation points for each of the ``m`` mixtures.
    means, sds : numpy.ndarray
        Shape ``(m, N)``: component means and standard deviations.
    weights : numpy.ndarray
        Shape ``(N,)``: component weights (summing to one), shared by the mixtures.

    Returns
    -------
    numpy.ndarray
        Shape ``(m, q)``.
    """
    return special.ndtr(_standardise(x, means, sds)) @ weights


def mixture_pdf(x: np.ndarray, means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Density of ``m`` normal mixtures at points ``x`` (shapes as in :func:`mixture_cdf`)."""
    z = _standardise(x, means, sds)
    return (np.exp(-0.5 * z * z) / (_SQRT_2PI * sds[:, None, :])) @ weights


def mixture_moments(means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``m`` normal mixtures (shapes ``(m, N)``, ``(N,)``)."""
    mean = means @ weights
    var = ((means - mean[:, None]) ** 2 + sds**2) @ weights
    return mean, np.sqrt(var)


def mixture_quantile(p: np.ndarray, means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Quantiles of ``m`` normal mixtures.

    Parameters
    ----------
    p : numpy.ndarray
        Shape ``(q,)``: probabilities in (0, 1).
    means, sds, weights : numpy.ndarray
        As in :func:`mixture_cdf`.

    Returns
    -------
    numpy.ndarray
        Shape ``(m, q)``.
    """
    p = np.asarray(p, dtype=float)
    mean, sd = mixture_moments(means, sds, weights)
    lo = np.min(means - _BRACKET_SDS * sds, axis=1)[:, None]
    hi = np.max(means + _BRACKET_SDS * sds, axis=1)[:, None]
    x0 = mean[:, None] + sd[:, None] * special.ndtri(p)[None, :]
    target = np.broadcast_to(p[None, :], (means.shape[0], p.size))

    def fun(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mixture_cdf(x, means, sds, weights), mixture_pdf(x, means, sds, weights)

    return solve_monotone(fun, target, lo, hi, x0)


def mixture_summary(means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> list[dict[str, float]]:
    """``{mean, sd, median, q025, q975}`` of each of ``m`` normal mixtures (shapes as in :func:`mixture_cdf`)."""
    mean, sd = mixture_moments(means, sds, weights)
    q = mixture_quantile(SUMMARY_P, means, sds, weights)
    return [
        {
            "mean": float(mean[i]),
            "sd": float(sd[i]),
            "median": float(q[i, 0]),
            "q025": float(q[i, 1]),
            "q975": float(q[i, 2]),
        }
        for i in range(means.shape[0])
    ]


@dataclass(frozen=True)
class LocationMixture:
    """Components of the location mixtures over tau (see :mod:`models.exact.posterior`).

    Attributes
    ----------
    tau, weights : numpy.ndarray
        Shape ``(N,)``: nodes and weights (sum 1).
    mean, cov : numpy.ndarray
        Shapes ``(N, p)`` and ``(N, p, p)``: ``E[beta | tau, y]`` and ``Cov[beta | tau, y]``.
    """

    tau: np.ndarray
    weights: np.ndarray
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def on_nodes(cls, conditional: Callable, tau: np.ndarray, weights: np.ndarray, *, prune: bool) -> LocationMixture:
        """Mixture at nodes ``tau``; ``conditional(tau) -> (loglik, mean, cov)`` as ``NormalModel.conditional``.

        With ``prune``, components lighter than 1e-15 of the heaviest are dropped. Weights are
        renormalised to sum 1.
        """
        if prune:
            keep = weights > _WEIGHT_FLOOR * weights.max()
            tau, weights = tau[keep], weights[keep]
        _, mean, cov = conditional(tau)
        return cls(tau, weights / weights.sum(), mean, cov)

    def linear(self, x: np.ndarray, *, new_study: bool) -> tuple[np.ndarray, np.ndarray]:
        """Component means and sds, shape ``(N,)``, of ``x' beta`` (plus tau^2 if ``new_study``)."""
        var = np.einsum("i,nij,j->n", x, self.cov, x) + (self.tau**2 if new_study else 0.0)
        return self.mean @ x, np.sqrt(var)

    def shrinkage(self, y: np.ndarray, v: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Component means and sds, shape ``(k, N)``, of each study's theta_i."""
        lam = self.tau[:, None] ** 2 / (self.tau[:, None] ** 2 + v[None, :])
        fitted = self.mean @ X.T
        fitted_var = np.einsum("kp,npq,kq->nk", X, self.cov, X)
        mean = lam * y + (1.0 - lam) * fitted
        return mean.T, np.sqrt(lam * v + (1.0 - lam) ** 2 * fitted_var).T
