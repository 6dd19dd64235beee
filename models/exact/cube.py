r"""Adaptive tensor Gauss–Legendre quadrature of a posterior density over a box.

The caller writes every parameter through a coordinate :math:`c_d` in which the integrand
:math:`q(c) = p(y \mid \theta(c))\, p(\theta(c))\, |\partial\theta / \partial c|` is smooth
(:mod:`models.bias_models`: prior-CDF coordinates for mu, log tau, stick-breaking fractions of
a Dirichlet), and gives an initial box outside which :math:`q` is negligible. Then

.. math::

    p(y) = \int q(c)\, dc,

and the posterior density of :math:`c` is :math:`q(c) / p(y)`. For the models of
:mod:`models.bias_models` there are at most four coordinates, so a tensor grid is affordable.

Algorithm (:func:`integrate`): a Gauss–Legendre grid with ``n_search`` nodes per axis over the
current box (initially the caller's); the box of each axis is shrunk to the nodes whose
marginal log density (log-sum over the other axes) lies within ``cutoff`` nats of its maximum,
widened by one node on each side (so for a unimodal integrand the mode stays inside); repeated until no
axis shrinks by more than half. The final box can hold a long tail, so each axis is split into a
bulk panel holding all but :data:`BULK_TAIL` of the marginal mass on either side (read off the
last search grid) and two tail panels, with composite Gauss–Legendre rules (70% of the nodes in
the bulk). The integral is computed with ``n_final`` nodes per axis; its difference to the last
search grid's (``n_search`` plain Gauss–Legendre nodes on the same box) is reported as a
conservative estimate of the quadrature error. The
marginal density outside the box is below :math:`e^{-\text{cutoff}}` times its peak (as
resolved by the search grid).

Marginal distributions of single axes (:meth:`CubeIntegral.axis_cdf`) are tabulated on request
(``marginal_axes``) at :data:`N_MARGINAL` points, the other axes integrated by the composite rule.

This module knows nothing about meta-analysis; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.special import logsumexp

__all__ = ["CUTOFF", "N_FINAL", "N_SEARCH", "CubeIntegral", "integrate"]


#: Nodes per axis while the box is searched, and in the final evaluation, by number of axes
#: (measured on RoBMA's single models of Bem2011: log-evidence within 2e-3 of a 64-node grid).
N_SEARCH: dict[int, int] = {1: 24, 2: 20, 3: 20, 4: 16}
N_FINAL: dict[int, int] = {1: 64, 2: 48, 3: 40, 4: 28}
#: Drop of the marginal log density (nats) below its maximum that bounds the box: e^-12 = 6e-6.
CUTOFF = 12.0
#: Marginal mass left in each tail outside the bulk panel, and the share of an axis's nodes in
#: its two tail panels (composite Gauss–Legendre; :func:`integrate`).
BULK_TAIL = 1e-3
TAIL_SHARE = 0.3
#: At most this many search stages.
MAX_STAGES = 10
#: Points at which a marginal CDF is tabulated (a sixth in each tail panel).
N_MARGINAL = 161
#: Nodes of each other axis when a marginal is tabulated, by number of axes.
N_OTHER: dict[int, int] = {1: 1, 2: 24, 3: 20, 4: 14}

LogLik = Callable[[list[np.ndarray]], np.ndarray]


@lru_cache(maxsize=16)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def _axis_nodes(box: tuple[float, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = _legendre(n)
    lo, hi = box
    return lo + (hi - lo) * x, (hi - lo) * w


def _composite_nodes(panel: tuple[float, float, float, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes on ``[lo, a]``, ``[a, b]``, ``[b, hi]``: most of them in the bulk ``[a, b]``."""
    lo, a, b, hi = panel
    n_tail = max(2, round(n * TAIL_SHARE / 2))
    parts = [(lo, a), (b, hi)]
    tails = [(x, y) for x, y in parts if y - x > 1e-12 * max(1.0, abs(hi - lo))]
    n_bulk = max(4, n - n_tail * len(tails))
    pieces = [_axis_nodes((a, b), n_bulk)] + [_axis_nodes(t, n_tail) for t in tails]
    x = np.concatenate([p[0] for p in pieces])
    w = np.concatenate([p[1] for p in pieces])
    order = np.argsort(x)
    return x[order], w[order]


def _bulk_panels(
    log_lik: np.ndarray, nodes: list[np.ndarray], weights: list[np.ndarray], boxes: list[tuple[float, float]]
) -> list[tuple[float, float, float, float]]:
    """Per axis ``(lo, a, b, hi)``: ``[a, b]`` holds all but :data:`BULK_TAIL` of each tail's marginal mass."""
    log_mass = log_lik + _log_weight_grid(weights)
    panels = []
    for d, (x, (lo, hi)) in enumerate(zip(nodes, boxes, strict=True)):
        other = tuple(a for a in range(log_mass.ndim) if a != d)
        marginal = logsumexp(log_mass, axis=other) if other else log_mass
        mass = np.exp(marginal - marginal.max())
        cum = np.cumsum(mass) / mass.sum()
        first = int(np.searchsorted(cum, BULK_TAIL))
        last = int(np.searchsorted(cum, 1.0 - BULK_TAIL))
        a = x[first - 1] if first >= 1 else lo
        b = x[last + 1] if last + 1 < x.size else hi
        panels.append((lo, float(a), float(b), hi))
    return panels


def _log_evidence(log_lik: np.ndarray, weights: list[np.ndarray]) -> float:
    return float(logsumexp(log_lik + _log_weight_grid(weights))) if weights else float(log_lik)


def _log_weight_grid(weights: list[np.ndarray]) -> np.ndarray:
    return sum(np.log(w).reshape([-1 if a == d else 1 for a in range(len(weights))]) for d, w in enumerate(weights))


def _shrink(
    log_lik: np.ndarray,
    nodes: list[np.ndarray],
    weights: list[np.ndarray],
    boxes: list[tuple[float, float]],
    cutoff: float,
) -> list[tuple[float, float]]:
    log_mass = log_lik + _log_weight_grid(weights)
    new = []
    for d, (x, box) in enumerate(zip(nodes, boxes, strict=True)):
        other = tuple(a for a in range(log_mass.ndim) if a != d)
        marginal = logsumexp(log_mass, axis=other) if other else log_mass
        marginal = marginal - np.log(weights[d])  # density, not mass: nodes are unevenly spaced
        keep = np.flatnonzero(marginal >= np.nanmax(marginal) - cutoff)
        lo = x[keep[0] - 1] if keep[0] > 0 else box[0]
        hi = x[keep[-1] + 1] if keep[-1] < x.size - 1 else box[1]
        new.append((float(lo), float(hi)))
    return new


@dataclass(frozen=True)
class CubeIntegral:
    """The integral of a posterior density over its box and the posterior on the final grid.

    Attributes
    ----------
    nodes, weights : list of numpy.ndarray
        Per axis: the final Gauss–Legendre nodes (coordinates) and weights.
    log_lik : numpy.ndarray
        Log integrand (log-likelihood plus log prior density in the coordinates) on the grid.
    log_evidence : float
        :math:`\\log \\int q\\,dc`, the log marginal likelihood.
    error : float
        ``|log_evidence - (the same with the search grid on the final box)|``: a conservative
        estimate of the quadrature error of ``log_evidence`` (the composite final rule converges
        much faster than the coarse plain one; tests compare it with refined grids).
    boxes : list of tuple
        The final box of each axis.
    marginals : dict
        Axis -> ``(c, F(c))``: marginal CDF tabulated at :data:`N_MARGINAL` evenly spaced points of
        the axis's box, the other axes integrated with their search-grid nodes (see :func:`integrate`).
    """

    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    log_lik: np.ndarray
    log_evidence: float
    error: float
    boxes: list[tuple[float, float]]
    marginals: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """Number of integrated axes."""
        return len(self.nodes)

    def mass(self) -> np.ndarray:
        """Posterior mass of each tensor node (sums to 1)."""
        m = np.exp(self.log_lik + _log_weight_grid(self.weights) - self.log_evidence)
        return m / m.sum()

    def expectation(self, values: np.ndarray) -> tuple[float, float]:
        """Posterior mean and SD of a function given by its values on the tensor grid."""
        m = self.mass()
        v = np.broadcast_to(values, m.shape)
        mean = float(np.sum(m * v))
        return mean, float(np.sqrt(max(np.sum(m * (v - mean) ** 2), 0.0)))

    def axis_cdf(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Marginal CDF of one coordinate on a fine grid of its box: ``(c, F(c))``.

        The tabulated marginal of :func:`integrate` (``marginal_axes``) when there is one;
        otherwise the node masses' mid-point cumulative sums at the final nodes (coarse: use
        ``marginal_axes`` for quantiles).
        """
        if axis in self.marginals:
            return self.marginals[axis]
        other = tuple(a for a in range(self.ndim) if a != axis)
        mass = self.mass().sum(axis=other) if other else self.mass()
        x, cum = self.nodes[axis], np.cumsum(mass)
        return x, np.clip(cum - mass / 2.0, 0.0, 1.0)


def _grid(boxes: Sequence[tuple[float, float]], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pairs = [_axis_nodes(b, n) for b in boxes]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def integrate(
    log_density: LogLik,
    boxes: Sequence[tuple[float, float]],
    *,
    n_search: int | None = None,
    n_final: int | None = None,
    cutoff: float = CUTOFF,
    marginal_axes: Sequence[int] = (),
) -> CubeIntegral:
    """Integrate ``exp(log_density)`` over a box (see the module docstring).

    Parameters
    ----------
    log_density : callable
        ``log_density(axes)`` takes one 1-D array of coordinates per axis and returns the log
        integrand on their tensor grid (shape ``tuple(len(c) for c in axes)``). Without axes it
        is called with an empty list and must return a scalar.
    boxes : sequence of (float, float)
        Initial box of each axis (finite); empty for a model without free parameters.
    n_search, n_final : int, optional
        Gauss–Legendre nodes per axis while searching the box, and finally (default
        :data:`N_SEARCH`, :data:`N_FINAL` for the number of axes; 5 or more axes use the 4-axis values).
    cutoff : float
        Drop of the marginal log density that bounds the box.
    marginal_axes : sequence of int
        Axes whose marginal CDF is tabulated (:attr:`CubeIntegral.marginals`): the integrand is
        evaluated at :data:`N_MARGINAL` evenly spaced points of the axis's final box times the
        search-grid nodes of the other axes, so quantiles are accurate even when the box holds a
        long tail.

    Returns
    -------
    CubeIntegral
    """
    log_lik = log_density
    if not boxes:
        value = float(log_lik([]))
        return CubeIntegral([], [], np.asarray(value), value, 0.0, [])
    boxes = [(float(lo), float(hi)) for lo, hi in boxes]
    n_search = n_search or N_SEARCH[min(len(boxes), 4)]
    n_final = n_final or N_FINAL[min(len(boxes), 4)]
    for _ in range(MAX_STAGES):
        nodes, weights = _grid(boxes, n_search)
        new = _shrink(log_lik(nodes), nodes, weights, boxes, cutoff)
        shrunk = any((hi - lo) < 0.5 * (b_hi - b_lo) for (lo, hi), (b_lo, b_hi) in zip(new, boxes, strict=True))
        boxes = new
        if not shrunk:
            break
    nodes, weights = _grid(boxes, n_search)
    search = log_lik(nodes)
    panels = _bulk_panels(search, nodes, weights, boxes)
    coarse = _log_evidence(search, weights)
    nodes, weights = _composite_grid(panels, n_final)
    values = log_lik(nodes)
    log_ev = _log_evidence(values, weights)
    n_other = N_OTHER[min(len(boxes), 4)]
    marginals = {axis: _tabulated_marginal(log_lik, boxes, panels, axis, n_other) for axis in marginal_axes}
    return CubeIntegral(nodes, weights, values, log_ev, abs(log_ev - coarse), boxes, marginals)


def _composite_grid(
    panels: list[tuple[float, float, float, float]], n: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pairs = [_composite_nodes(p, n) for p in panels]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _tabulated_marginal(
    log_lik: LogLik,
    boxes: list[tuple[float, float]],
    panels: list[tuple[float, float, float, float]],
    axis: int,
    n_other: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal CDF of ``axis`` at points over its box (most in the bulk); other axes by the composite rule."""
    nodes, weights = _composite_grid(panels, n_other)
    lo, a, b, hi = panels[axis]
    n_tail = N_MARGINAL // 6
    edges = np.unique(
        np.concatenate(
            [np.linspace(lo, a, n_tail), np.linspace(a, b, N_MARGINAL - 2 * n_tail), np.linspace(b, hi, n_tail)]
        )
    )
    mids = (edges[1:] + edges[:-1]) / 2.0  # midpoint rule: the box's end points may map to infinite values
    nodes[axis], weights[axis] = mids, np.ones(mids.size)
    log_q = log_lik(nodes) + _log_weight_grid(weights)
    other = tuple(a for a in range(len(boxes)) if a != axis)
    log_density = logsumexp(log_q, axis=other) if other else log_q
    density = np.exp(log_density - np.max(log_density))
    cdf = np.concatenate([[0.0], np.cumsum(density * np.diff(edges))])
    c = edges
    return c, cdf / cdf[-1]
