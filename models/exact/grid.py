"""Quadrature grid for the one-dimensional marginal posterior of tau.

:func:`build_tau_grid` locates the posterior mass of tau adaptively (a coarse geometric scan
over 24 orders of magnitude, then refinement until the mass is resolved), and lays ``n_nodes``
equally spaced nodes in ``u = log(1 + (tau - lo) / c)``: linear in tau near the lower end, with
``c`` of the order of the posterior median, and logarithmic in the tail, so heavy tails
(half-Cauchy prior, small k) cost few nodes. Moments and the normal mixtures of the location
parameters use the fourth-order composite rule on these nodes (cubic interpolation through four
neighbouring nodes per interval, one-sided at the ends; all weights positive). The CDF at the
nodes accumulates 3-point Gauss-Legendre integrals over each interval; between nodes it is the
node value plus a 6-point Gauss-Legendre integral of the exact density, and quantiles invert the
cubic Hermite interpolant of the CDF and then polish with Newton steps on that exact CDF.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.exact.mixture import solve_monotone

__all__ = ["TauGrid", "build_tau_grid"]

#: Log-density drop (relative to the maximum) beyond which posterior mass is ignored: e^-40.
_LOG_CUTOFF = 40.0
_COARSE_POWERS = np.arange(-40, 41)
_REFINE_NODES = 257
_MIN_RESOLVED = 64
_GL_X, _GL_W = np.polynomial.legendre.leggauss(6)


def _gauss_intervals(logpost: Callable, lo: float, c: float, u: np.ndarray, top: float) -> np.ndarray:
    """Integral of ``exp(logpost - top) dtau/du`` over each grid interval (3-point Gauss)."""
    x, w = np.polynomial.legendre.leggauss(3)
    half = 0.5 * (u[1] - u[0])
    points = (u[:-1, None] + half * (x[None, :] + 1.0)).ravel()
    tau = lo + c * np.expm1(points)
    values = np.exp(logpost(tau) - top) * (tau - lo + c)
    return half * (values.reshape(-1, 3) @ w)


def _node_weights(n: int, h: float) -> np.ndarray:
    """Weights of the fourth-order composite rule (cubic through four nodes per interval).

    Interval ``[u_i, u_i+1]`` gets ``h/24 (-g_i-1 + 13 g_i + 13 g_i+1 - g_i+2)``; the first and
    last intervals use the one-sided ``h/24 (9, 19, -5, 1)``. Summed per node, the weights are
    ``h (8, 31, 20, 25, 24, 24, ...)/24``: all positive.
    """
    w = np.zeros(n)
    w[:-3] -= 1.0
    w[1:-2] += 13.0
    w[2:-1] += 13.0
    w[3:] -= 1.0
    w[:4] += [9.0, 19.0, -5.0, 1.0]
    w[-4:] += [1.0, -5.0, 19.0, 9.0]
    return w * (h / 24.0)


@dataclass(frozen=True)
class TauGrid:
    """Quadrature grid for the marginal posterior of tau (see the module docstring)."""

    lo: float
    c: float
    h: float
    tau: np.ndarray
    weights: np.ndarray
    density: np.ndarray
    cdf_nodes: np.ndarray
    cdf_slope: np.ndarray
    log_evidence: float
    logpost: Callable[[np.ndarray], np.ndarray]

    def _u(self, tau: np.ndarray) -> np.ndarray:
        return np.log1p((tau - self.lo) / self.c)

    def _hermite(self, j: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CDF and its derivative in ``s`` on interval ``j`` at relative position ``s``."""
        f0, f1 = self.cdf_nodes[j], self.cdf_nodes[j + 1]
        m0, m1 = self.h * self.cdf_slope[j], self.h * self.cdf_slope[j + 1]
        s2, s3 = s * s, s * s * s
        value = f0 * (2 * s3 - 3 * s2 + 1) + m0 * (s3 - 2 * s2 + s) + f1 * (3 * s2 - 2 * s3) + m1 * (s3 - s2)
        slope = (f1 - f0) * (6 * s - 6 * s2) + m0 * (3 * s2 - 4 * s + 1) + m1 * (3 * s2 - 2 * s)
        return value, slope

    def _density_u(self, u: np.ndarray) -> np.ndarray:
        """Normalised posterior density of ``u`` (tau's density times ``dtau/du``)."""
        tau = self.lo + self.c * np.expm1(u)
        with np.errstate(under="ignore"):
            return np.exp(self.logpost(tau.ravel()).reshape(tau.shape) - self.log_evidence) * (tau - self.lo + self.c)

    def _cdf_u(self, u: np.ndarray) -> np.ndarray:
        """CDF at ``u``: node value plus a Gauss-Legendre integral from the node to ``u``."""
        j = np.clip(np.floor(u / self.h).astype(int), 0, self.tau.size - 2)
        start = j * self.h
        half = 0.5 * (u - start)
        points = start[..., None] + half[..., None] * (_GL_X + 1.0)
        return self.cdf_nodes[j] + half * (self._density_u(points) @ _GL_W)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Posterior CDF of tau at ``x``."""
        x = np.asarray(x, dtype=float)
        u_max = self.h * (self.tau.size - 1)
        u = np.clip(self._u(np.maximum(x, self.lo)), 0.0, u_max)
        return np.clip(np.where(x >= self.tau[-1], 1.0, self._cdf_u(u)), 0.0, 1.0)

    def quantile(self, p: np.ndarray, *, polish: bool = True) -> np.ndarray:
        """Posterior quantiles of tau for probabilities ``p`` in [0, 1].

        The cubic Hermite interpolant of the CDF is inverted first (error ~1e-7); with
        ``polish`` (default) Newton steps on the exact CDF then bring the error to rounding level.
        """
        p = np.asarray(p, dtype=float)
        j = np.clip(np.searchsorted(self.cdf_nodes, p, side="right") - 1, 0, self.tau.size - 2)
        s = solve_monotone(lambda s: self._hermite(j, s), p, np.zeros(p.shape), np.ones(p.shape))
        u = self.h * (j + s)
        for _ in range(3 if polish else 0):
            slope = self._density_u(u)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.where(slope > 0, (self._cdf_u(u) - p) / slope, 0.0)
            u = np.clip(u - step, self.h * j, self.h * (j + 1))
            if np.all(np.abs(step) <= 1e-14 * (1.0 + u)):
                break
        return self.lo + self.c * np.expm1(u)


def _scan(logpost: Callable, lower: float, upper: float, ref: float) -> tuple[float, float, float]:
    """Coarse geometric scan: bracket ``[lo, hi]`` of the mass and a typical scale."""
    t = lower + ref * np.exp2(_COARSE_POWERS.astype(float))
    t = np.append(t[t < upper], upper) if np.isfinite(upper) else t
    with np.errstate(divide="ignore"):
        h = logpost(t) + np.log(t - lower)  # log mass per unit log(tau - lower)
    if not np.any(np.isfinite(h)):
        raise ValueError("the posterior of tau has no mass where it was searched")
    keep = np.flatnonzero(h > np.max(h) - _LOG_CUTOFF)
    if keep[-1] == t.size - 1 and not np.isfinite(upper):
        raise ValueError("the posterior of tau does not decay: is the tau prior proper?")
    lo = lower if keep[0] == 0 else t[keep[0] - 1]
    hi = t[min(keep[-1] + 1, t.size - 1)]
    return lo, hi, t[np.argmax(h)] - lo


def _refine(logpost: Callable, lo: float, hi: float, c: float) -> tuple[float, float, float]:
    """Narrow ``[lo, hi]`` to where the density exceeds e^-40 of its maximum; bulk scale ``c``.

    Repeats until the central 98% of the mass spans enough refinement nodes.
    """
    c = c if c > 0 else (hi - lo) / _REFINE_NODES
    for _ in range(8):
        u = np.linspace(0.0, np.log1p((hi - lo) / c), _REFINE_NODES)
        t = lo + c * np.expm1(u)
        g = logpost(t) + np.log(t - lo + c)
        keep = np.flatnonzero(g > np.max(g) - _LOG_CUTOFF)
        mass = np.cumsum(np.exp(g - np.max(g)))
        i_lo, i_med, i_hi = np.searchsorted(mass / mass[-1], [0.01, 0.5, 0.99])
        new_lo = lo if keep[0] == 0 else t[keep[0] - 1]
        hi = t[min(keep[-1] + 1, t.size - 1)]
        c = max(t[i_med] - new_lo, t[1] - lo)
        lo = new_lo
        if keep.size >= _MIN_RESOLVED and i_hi - i_lo >= _MIN_RESOLVED // 2:
            break
    return lo, hi, c


def build_tau_grid(
    logpost: Callable[[np.ndarray], np.ndarray],
    *,
    lower: float,
    upper: float,
    ref: float,
    n_nodes: int = 401,
) -> TauGrid:
    """Quadrature grid for a one-dimensional unnormalised log posterior of tau.

    Parameters
    ----------
    logpost : callable
        Vectorised unnormalised log posterior density of tau (``-inf`` outside the support).
    lower, upper : float
        Support of the tau prior.
    ref : float
        A typical scale of tau (from the data and the prior), used to start the search.
    n_nodes : int
        Number of final quadrature nodes (>= 8).

    Returns
    -------
    TauGrid
    """
    lo, hi, c = _scan(logpost, lower, upper, ref)
    lo, hi, c = _refine(logpost, lo, hi, c)
    u = np.linspace(0.0, np.log1p((hi - lo) / c), n_nodes)
    h = u[1] - u[0]
    tau = lo + c * np.expm1(u)
    tau[-1] = hi
    lp = logpost(tau)
    top = np.max(lp)
    jac = tau - lo + c
    g = np.exp(lp - top) * jac
    pieces = _gauss_intervals(logpost, lo, c, u, top)
    total = np.sum(pieces)
    cdf = np.concatenate([[0.0], np.cumsum(pieces)]) / total
    cdf[-1] = 1.0
    weights = _node_weights(n_nodes, h) * g / total
    weights /= np.sum(weights)
    density = np.exp(lp - top) / total
    return TauGrid(
        lo=lo,
        c=c,
        h=h,
        tau=tau,
        weights=weights,
        density=density,
        cdf_nodes=cdf,
        cdf_slope=g / total,
        log_evidence=top + np.log(total),
        logpost=logpost,
    )
