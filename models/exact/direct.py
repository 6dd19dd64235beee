r"""bayesmeta's DIRECT discrete approximation of the location mixtures over tau.

R ``bayesmeta`` (Röver 2020, J Stat Softw 93(6)) integrates the marginal posterior of tau
exactly, but represents the marginals of mu, theta_new and the shrinkage estimates theta_i --
continuous normal mixtures over ``p(tau | y)`` -- by the finite mixture of its DIRECT algorithm
(Röver & Friede 2017, "Discrete approximation of a mixture distribution via restricted
divergence", J Comput Graph Stat 26:217-222, doi:10.1080/10618600.2016.1276840). This module
reproduces that algorithm (as in bayesmeta 3.4, ``discretize(delta = 0.01, epsilon = 1e-4)``
with all ``k + 2`` divergences) so that the exact engine can report bayesmeta's numbers; see
``exact_posterior(..., mixture="bayesmeta")``.

Conditional moments (random-effects model, ``mu ~ N(M, S^2)``, ``w_i = 1 / (v_i + tau^2)``)::

    V(tau) = 1 / (1 / S^2 + sum_i w_i),         m(tau) = V(tau) (M / S^2 + sum_i w_i y_i)
    mu        | tau, y ~ N(m, V)
    theta_new | tau, y ~ N(m, V + tau^2)
    theta_i   | tau, y ~ N(l_i y_i + (1 - l_i) m, l_i v_i + (1 - l_i)^2 V),   l_i = tau^2 w_i

(at ``tau = 0``, ``l_i = 0`` and theta_i has the moments of mu, as in bayesmeta).

Divergence of two tau values: the largest symmetrised Kullback-Leibler divergence over these
``k + 2`` conditionals::

    D(t1, t2) = max_j J(N(m_j(t1), s_j(t1)^2), N(m_j(t2), s_j(t2)^2)),
    J(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 (1 / s1^2 + 1 / s2^2) / 2 + (s1^2 - s2^2)^2 / (2 s1^2 s2^2).

(``J``, Jeffreys' divergence, is the sum of the two Kullback-Leibler divergences). Grid: the chain
``x_0 = 0 < x_1 < x_2 < ...`` with ``D(x_{n-1}, x_n) = delta``. Bin 1 is ``[0, x_1]`` with
reference point ``t_1 = 0``; bin ``b >= 2`` is ``(x_{2b-3}, x_{2b-1}]`` with reference point
``t_b = x_{2b-2}``. Bins are added until one's upper margin exceeds the ``1 - epsilon`` posterior
quantile of tau (at least two bins). Each reference point carries the posterior probability
``w_b`` of its bin (renormalised to sum 1), and every location marginal becomes::

    p(theta | y) ~= sum_b w_b N(theta; m(t_b), s(t_b)^2).

Within a bin each conditional is within divergence ``delta`` of the reference one (when
``D(t_b, .)`` grows away from ``t_b``), so by joint convexity of the Kullback-Leibler divergence
each approximate marginal is within divergence ``delta`` of the exact one, up to the omitted tail
of probability < epsilon (the idea of Röver & Friede 2017). Its quantiles still differ from the
exact ones by up to a few 1e-3 (4.3e-3 on theta_new limits in tests/test_reference_bayesmeta.py).

Computation: bayesmeta solves ``D(x_n, x) = delta`` one step at a time with ``uniroot``
(``method="brent"`` here, the same bracketing). The default ``method="newton"`` solves the whole
chain at once: an arc-length initial guess from the local form ``D(t, t + dt) ~ I(t) dt^2``,
``I = max_j (m_j'^2 + 2 s_j'^2) / s_j^2`` (Fisher information), then Newton steps on the lower
bidiagonal system ``D(x_{n-1}, x_n) = delta`` with complex-step derivatives (Squire & Trapp 1998,
SIAM Rev 40:110-112); it falls back to ``"brent"`` if it does not converge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import optimize

from models.exact.normal_model import NormalModel

__all__ = ["DirectSupport", "TauPosterior", "conditional_moments", "direct_support"]


class TauPosterior(Protocol):
    """What the DIRECT support needs of an exact posterior (:class:`models.exact.posterior.ExactPosterior`)."""

    model: NormalModel
    regression: bool

    def cdf(self, param: str, x: np.ndarray | float) -> np.ndarray: ...

    def quantile(self, param: str, p: np.ndarray | float) -> np.ndarray: ...


#: bayesmeta 3.4 defaults of ``bayesmeta(..., delta, epsilon)``.
DELTA, EPSILON = 0.01, 1e-4
_METHODS = ("newton", "brent")
_STEP = 1e-30  # complex-step size
_XTOL = 1e-14  # absolute root tolerance of the step-by-step solver
#: Newton stops after a step below this (relative); convergence is quadratic, so the last update
#: leaves an error of the order of its square.
_NEWTON_TOL = 1e-9
_NEWTON_ITER = 40
_GUESS_NODES = 512


@dataclass(frozen=True)
class DirectSupport:
    """bayesmeta's DIRECT support (see the module docstring).

    Attributes
    ----------
    tau, weight, upper : numpy.ndarray
        Shape ``(n,)``: reference points (``tau[0] = 0``), bin probabilities (sum 1) and upper
        bin margins.
    mean, sd : numpy.ndarray
        Shape ``(n, k + 2)``: conditional means and sds at ``tau``; columns mu, theta_new,
        theta_1..theta_k.
    """

    tau: np.ndarray
    weight: np.ndarray
    upper: np.ndarray
    mean: np.ndarray
    sd: np.ndarray


def conditional_moments(model: NormalModel, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conditional means and sds of mu, theta_new and theta_1..k given tau.

    Parameters
    ----------
    model : NormalModel
        Random-effects model (one coefficient, ``X`` a column of ones).
    tau : numpy.ndarray
        Shape ``(n,)``; complex values are allowed (complex-step differentiation).

    Returns
    -------
    mean, sd : numpy.ndarray
        Shape ``(n, k + 2)``; columns mu, theta_new, theta_1..theta_k.
    """
    tau = np.asarray(tau)
    y, v = model.yi, model.vi
    t2 = tau[:, None] ** 2
    w = 1.0 / (v[None, :] + t2)
    prior_prec = 1.0 / model.beta_cov[0, 0]
    var = 1.0 / (prior_prec + w.sum(axis=1))
    mean = var * (prior_prec * model.beta_mean[0] + np.sum(w * y, axis=1))
    lam, rest = t2 * w, v[None, :] * w  # l_i and 1 - l_i
    means = np.concatenate([mean[:, None], mean[:, None], lam * y + rest * mean[:, None]], axis=1)
    variances = np.concatenate([var[:, None], var[:, None] + t2, lam * v + rest**2 * var[:, None]], axis=1)
    return means, np.sqrt(variances)


def _sym_kl(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Symmetrised Kullback-Leibler divergence of ``N(m1, s1^2)`` and ``N(m2, s2^2)``."""
    a, b = s1 * s1, s2 * s2
    return (m1 - m2) ** 2 * 0.5 * (1.0 / a + 1.0 / b) + (a - b) ** 2 / (2.0 * a * b)


def _divergence(model: NormalModel, t1: float, t2: float) -> float:
    """``D(t1, t2)``: the largest divergence over the ``k + 2`` conditionals."""
    mean, sd = conditional_moments(model, np.array([t1, t2]))
    return float(np.max(_sym_kl(mean[0], sd[0], mean[1], sd[1])))


def _brent_chain(model: NormalModel, delta: float, max_tau: float) -> np.ndarray:
    """The chain one step at a time, with bayesmeta's bracketing (``upper`` only ever doubles)."""
    chain, upper = [0.0], 1.0
    while len(chain) < 4 or chain[-1] <= max_tau:  # chain[-1]: the last bin's upper margin
        for _ in range(1 if len(chain) == 1 else 2):  # bin 1: margin only; then reference + margin
            t = chain[-1]
            while _divergence(model, t, upper) <= delta:
                upper *= 2.0
            chain.append(optimize.brentq(lambda x, t=t: _divergence(model, t, x) - delta, t, upper, xtol=_XTOL))
    return np.array(chain)


def _guess_chain(model: NormalModel, delta: float, end: float) -> np.ndarray:
    """Initial chain up to ``end``: equal steps ``sqrt(delta)`` of arc length ``int sqrt(I)``."""
    c = 0.1 * np.sqrt(np.min(model.vi))
    t = c * np.expm1(np.linspace(0.0, np.log1p(end / c), _GUESS_NODES))
    mean, sd = conditional_moments(model, t + 1j * _STEP)
    dm, ds = mean.imag / _STEP, sd.imag / _STEP
    speed = np.sqrt(np.max((dm**2 + 2.0 * ds**2) / sd.real**2, axis=1))
    length = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(t))])
    return np.interp(np.arange(0.0, length[-1], np.sqrt(delta)), length, t)


def _newton_step(model: NormalModel, x: np.ndarray, delta: float) -> np.ndarray:
    """Newton step for ``D(x_{n-1}, x_n) = delta``, n >= 1, with ``x_0 = 0`` fixed."""
    cplx = conditional_moments(model, x + 1j * _STEP)
    real = (cplx[0].real, cplx[1].real)
    value = _sym_kl(real[0][:-1], real[1][:-1], real[0][1:], real[1][1:])
    d_prev = _sym_kl(cplx[0][:-1], cplx[1][:-1], real[0][1:], real[1][1:]).imag / _STEP
    d_next = _sym_kl(real[0][:-1], real[1][:-1], cplx[0][1:], cplx[1][1:]).imag / _STEP
    j = np.argmax(value, axis=1)[:, None]
    resid = np.take_along_axis(value, j, 1)[:, 0] - delta
    a = np.take_along_axis(d_prev, j, 1)[:, 0].tolist()
    b = np.take_along_axis(d_next, j, 1)[:, 0].tolist()
    step, prev = np.empty(resid.size), 0.0
    for n, r in enumerate(resid.tolist()):  # forward substitution (lower bidiagonal)
        prev = (-r - a[n] * prev) / b[n]
        step[n] = prev
    return np.concatenate([[0.0], step])


def _truncate(chain: np.ndarray, max_tau: float) -> int | None:
    """Length of the chain bayesmeta keeps: up to the first bin margin beyond ``max_tau``."""
    beyond = np.flatnonzero(chain[3::2] > max_tau)
    return None if beyond.size == 0 else 3 + 2 * int(beyond[0]) + 1


def _newton_chain(model: NormalModel, delta: float, max_tau: float) -> np.ndarray | None:
    """The whole chain by Newton's method; ``None`` if it does not converge."""
    end = 2.0 * max_tau + np.sqrt(np.min(model.vi))
    x = _guess_chain(model, delta, end)
    for _ in range(_NEWTON_ITER):  # extend the guess until it passes max_tau
        if _truncate(x, max_tau) is not None:
            break
        end *= 2.0
        x = _guess_chain(model, delta, end)
    for _ in range(_NEWTON_ITER):
        step = _newton_step(model, x, delta)
        x = x + step
        n = _truncate(x, max_tau)
        if n is None or not np.all(np.isfinite(x[:n])) or np.any(np.diff(x[:n]) <= 0):
            return None
        if np.all(np.abs(step[:n]) <= _NEWTON_TOL * (1.0 + x[:n])):
            return x[:n]
    return None


def direct_support(
    post: TauPosterior, *, delta: float = DELTA, epsilon: float = EPSILON, method: str = "newton"
) -> DirectSupport:
    """bayesmeta's DIRECT support for the random-effects posterior ``post``.

    Parameters
    ----------
    post : TauPosterior
        Exact posterior of the random-effects model (no meta-regression); only its tau
        posterior (``cdf``/``quantile`` of ``"tau"``) and model are used.
    delta : float
        Divergence between neighbouring grid points (bayesmeta default 0.01).
    epsilon : float
        Tail probability of tau left out of the grid's range (bayesmeta default 1e-4).
    method : {"newton", "brent"}
        Whole-chain Newton (fast; falls back to ``"brent"``) or bayesmeta's step-by-step root
        finding.

    Returns
    -------
    DirectSupport

    Raises
    ------
    ValueError
        For a meta-regression posterior or invalid ``delta``, ``epsilon`` or ``method``.
    """
    if post.regression:
        raise ValueError("the DIRECT mixture is implemented for the random-effects model only (no X)")
    if not (delta > 0 and 0 < epsilon < 1) or method not in _METHODS:
        raise ValueError(f"need delta > 0, 0 < epsilon < 1, method in {_METHODS}; got {delta}, {epsilon}, {method!r}")
    max_tau = float(post.quantile("tau", 1.0 - min(epsilon, 1.0 - epsilon)))
    chain = _newton_chain(post.model, delta, max_tau) if method == "newton" else None
    chain = _brent_chain(post.model, delta, max_tau) if chain is None else chain
    tau, upper = chain[0::2], chain[1::2]
    weight = np.maximum(np.diff(post.cdf("tau", upper), prepend=0.0), 0.0)
    total = weight.sum()
    weight = weight / total if total > 0 else np.full(weight.size, 1.0 / weight.size)
    mean, sd = conditional_moments(post.model, tau)
    return DirectSupport(tau, weight, upper, mean, sd)
