"""The normal-normal likelihood given tau, and the quadrature grid for tau's posterior.

:class:`NormalModel` evaluates, for a vector of tau values, the marginal likelihood
``p(y | tau) = N(y; X b0, diag(v + tau^2) + X B0 X')`` and the conditional posterior
``beta | tau, y ~ N(m(tau), V(tau))`` (conjugate generalised least squares):

    V(tau)^-1 = B0^-1 + X' W X,    m(tau) = V(tau) (B0^-1 b0 + X' W y),    W = diag(1 / (v + tau^2))

    log p(y | tau) = -1/2 [k log(2 pi) + sum log(v_i + tau^2) + log|B0| + log|V(tau)^-1|
                           + (y - X m)' W (y - X m) + (m - b0)' B0^-1 (m - b0)]

(matrix determinant lemma and Woodbury; the quadratic form is written as a sum of two
non-negative terms for numerical stability).

:func:`build_tau_grid` locates the posterior mass of tau adaptively (a coarse geometric scan
over 24 orders of magnitude, then refinement until the mass is resolved), and lays ``n_nodes``
equally spaced nodes in ``u = log(1 + (tau - lo) / c)``: linear in tau near the lower end, with
``c`` of the order of the posterior median, and logarithmic in the tail, so heavy tails
(half-Cauchy prior, small k) cost few nodes. Integrals use a fourth-order composite rule (cubic
interpolation through four neighbouring nodes per interval, one-sided at the ends), which also
gives the CDF at every node; between nodes the CDF is the cubic Hermite interpolant with the
exact density as slope, inverted with a safeguarded Newton iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.exact_mixture import solve_monotone

__all__ = ["NormalModel", "TauGrid", "build_tau_grid"]

#: Log-density drop (relative to the maximum) beyond which posterior mass is ignored: e^-40.
_LOG_CUTOFF = 40.0
_COARSE_POWERS = np.arange(-40, 41)
_REFINE_NODES = 257
_MIN_RESOLVED = 64


@dataclass(frozen=True)
class NormalModel:
    """Data and conjugate normal prior of the normal-normal (meta-regression) model."""

    yi: np.ndarray
    vi: np.ndarray
    X: np.ndarray
    beta_mean: np.ndarray
    beta_cov: np.ndarray

    @property
    def k(self) -> int:
        return self.yi.size

    def conditional(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Log marginal likelihood, conditional mean and covariance of beta at each tau.

        Parameters
        ----------
        tau : numpy.ndarray
            Shape ``(n,)``, non-negative.

        Returns
        -------
        loglik : numpy.ndarray
            Shape ``(n,)``: ``log p(y | tau)``.
        mean : numpy.ndarray
            Shape ``(n, p)``: ``E[beta | tau, y]``.
        cov : numpy.ndarray
            Shape ``(n, p, p)``: ``Cov[beta | tau, y]``.
        """
        tau = np.asarray(tau, dtype=float)
        prior_prec = np.linalg.inv(self.beta_cov)
        w = 1.0 / (self.vi[None, :] + tau[:, None] ** 2)
        xtw = self.X.T[None, :, :] * w[:, None, :]
        prec = prior_prec[None] + xtw @ self.X
        rhs = (prior_prec @ self.beta_mean)[None, :] + xtw @ self.yi
        chol = np.linalg.cholesky(prec)
        cov = np.linalg.inv(prec)
        mean = np.einsum("nij,nj->ni", cov, rhs)
        resid = self.yi[None, :] - mean @ self.X.T
        dev = mean - self.beta_mean[None, :]
        quad = np.sum(w * resid**2, axis=1) + np.einsum("ni,ij,nj->n", dev, prior_prec, dev)
        logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
        logdet += np.linalg.slogdet(self.beta_cov)[1]
        loglik = -0.5 * (self.k * np.log(2.0 * np.pi) - np.sum(np.log(w), axis=1) + logdet + quad)
        return loglik, mean, cov


def _interval_integrals(g: np.ndarray, h: float) -> np.ndarray:
    """Integrals of ``g`` over each interval of a uniform grid (cubic through 4 nodes)."""
    out = np.empty(g.size - 1)
    out[1:-1] = -g[:-3] + 13.0 * g[1:-2] + 13.0 * g[2:-1] - g[3:]
    out[0] = 9.0 * g[0] + 19.0 * g[1] - 5.0 * g[2] + g[3]
    out[-1] = 9.0 * g[-1] + 19.0 * g[-2] - 5.0 * g[-3] + g[-4]
    return out * (h / 24.0)


def _node_weights(n: int, h: float) -> np.ndarray:
    """Quadrature weights equivalent to summing :func:`_interval_integrals`."""
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

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Posterior CDF of tau at ``x``."""
        x = np.asarray(x, dtype=float)
        pos = np.clip(self._u(np.maximum(x, self.lo)) / self.h, 0.0, self.tau.size - 1.0)
        j = np.minimum(np.floor(pos).astype(int), self.tau.size - 2)
        value = self._hermite(j, pos - j)[0]
        return np.clip(np.where(x >= self.tau[-1], 1.0, value), 0.0, 1.0)

    def quantile(self, p: np.ndarray) -> np.ndarray:
        """Posterior quantiles of tau for probabilities ``p`` in [0, 1]."""
        p = np.asarray(p, dtype=float)
        j = np.clip(np.searchsorted(self.cdf_nodes, p, side="right") - 1, 0, self.tau.size - 2)
        s = solve_monotone(lambda s: self._hermite(j, s), p, np.zeros(p.shape), np.ones(p.shape))
        u = self.h * (j + s)
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
    """Narrow ``[lo, hi]`` to where the density exceeds e^-40 of its maximum; median scale."""
    c = max(c, (hi - lo) * 1e-6)
    for _ in range(8):
        u = np.linspace(0.0, np.log1p((hi - lo) / c), _REFINE_NODES)
        t = lo + c * np.expm1(u)
        g = logpost(t) + np.log(t - lo + c)
        keep = np.flatnonzero(g > np.max(g) - _LOG_CUTOFF)
        mass = np.cumsum(np.exp(g - np.max(g)))
        median = t[np.searchsorted(mass, 0.5 * mass[-1])]
        new_lo = lo if keep[0] == 0 else t[keep[0] - 1]
        hi = t[min(keep[-1] + 1, t.size - 1)]
        lo, c = new_lo, max(median - new_lo, (hi - new_lo) * 1e-3)
        if keep.size >= _MIN_RESOLVED:
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
    pieces = np.maximum(_interval_integrals(g, h), 0.0)
    total = np.sum(pieces)
    cdf = np.concatenate([[0.0], np.cumsum(pieces)]) / total
    cdf[-1] = 1.0
    weights = _node_weights(n_nodes, h) * g / total
    weights /= np.sum(weights)
    density = np.exp(lp - top) / total
    return TauGrid(
        lo=lo, c=c, h=h, tau=tau, weights=weights, density=density,
        cdf_nodes=cdf, cdf_slope=g / total, log_evidence=top + np.log(total),
    )
