r"""Exact (quadrature) posterior of the three-level normal model with a normal prior on mu.

Model (:mod:`models.multilevel`): per study :math:`i`,
:math:`y_i \mid \mu, \tau, \omega \sim \mathrm{MVN}(\mu 1, C_i)`,
:math:`C_i = V_i + \tau^2 J + \omega^2 I`, with :math:`\mu \sim \mathcal N(m_0, s_0^2)` and
priors on :math:`\tau` and :math:`\omega`.

For fixed :math:`(\tau, \omega)` the posterior of :math:`\mu` is normal (conjugate), so the
posterior is a normal mixture over the 2-D marginal posterior of :math:`(\tau, \omega)`, which is
computed on a product grid. Each evaluation is closed-form: with :math:`V_i = Q_i \Lambda_i Q_i^\top`
(once), :math:`A_i = V_i + \omega^2 I = Q_i(\Lambda_i + \omega^2)Q_i^\top`, and with
:math:`a_i = 1^\top A_i^{-1} 1`, :math:`b_i = 1^\top A_i^{-1} y_i`, :math:`c_i = y_i^\top A_i^{-1} y_i`
(sums over the eigenvalues), Sherman–Morrison gives

.. math::

    1^\top C_i^{-1} 1 = \frac{a_i}{1 + \tau^2 a_i}, \quad
    1^\top C_i^{-1} y_i = \frac{b_i}{1 + \tau^2 a_i}, \quad
    y_i^\top C_i^{-1} y_i = c_i - \frac{\tau^2 b_i^2}{1 + \tau^2 a_i}, \quad
    \log|C_i| = \textstyle\sum_j \log(\lambda_{ij} + \omega^2) + \log(1 + \tau^2 a_i).

With :math:`P = \sum_i 1^\top C_i^{-1} 1 + s_0^{-2}` and
:math:`R = \sum_i 1^\top C_i^{-1} y_i + m_0 s_0^{-2}`,
:math:`\mu \mid \tau, \omega, y \sim \mathcal N(R/P, 1/P)` and

.. math::

    \log p(y \mid \tau, \omega) = -\tfrac12 \Big[\textstyle\sum_i \log|C_i| + \log(s_0^2 P)
        + \sum_i y_i^\top C_i^{-1} y_i + m_0^2 s_0^{-2} - R^2/P\Big] - \tfrac n2 \log 2\pi.

Grid: a coarse 160 x 160 scan of the prior support (up to the prior's 1 - 1e-12 quantile)
locates the region where the log posterior is within 40 of its maximum; that box (one coarse
cell wider, clipped to the support) gets a composite Gauss–Legendre rule (``panels`` panels of
8 nodes per axis). Means and SDs are then exact to quadrature error (far below 1e-6 on smooth
posteriors); the quantiles of tau and omega interpolate the cumulative node weights linearly, so
they are accurate to a fraction of the node spacing. The summaries of mu are those of the normal
mixture (:func:`models.exact.mixture.mixture_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from models.exact.mixture import mixture_cdf, mixture_summary
from models.priors import PriorSpec

__all__ = ["MultilevelPosterior", "block_spectra", "exact_multilevel_posterior"]

_LOG_CUTOFF = 40.0
_COARSE = 160
_GL_ORDER = 8
_TAIL = 1e-12
#: Grid nodes with less posterior mass than this are dropped from the mixtures (their total is < 1e-9).
_NEGLIGIBLE = 1e-15
#: Nodes per block in :func:`_study_sums` (bounds memory to ~_CHUNK x k x N).
_CHUNK = 512


def block_spectra(V: np.ndarray, n: np.ndarray, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decompose the leading ``n_i x n_i`` block of each ``V_i``; other slots keep unit vectors.

    Parameters
    ----------
    V : numpy.ndarray
        ``(k, N, N)`` covariances whose real block is the leading ``n_i`` rows and columns.
    n : numpy.ndarray
        ``(k,)`` size of each real block.
    pad_value : float
        Eigenvalue given to the padded slots.

    Returns
    -------
    lam : numpy.ndarray
        ``(k, N)`` eigenvalues (real block first).
    Q : numpy.ndarray
        ``(k, N, N)`` eigenvectors as columns; column ``j < n_i`` lives on the real slots.
    """
    k, N, _ = V.shape
    lam = np.full((k, N), float(pad_value))
    Q = np.broadcast_to(np.eye(N), (k, N, N)).copy()
    for i, size in enumerate(np.asarray(n, dtype=int)):
        lam[i, :size], Q[i, :size, :size] = np.linalg.eigh(V[i, :size, :size])
    return lam, Q


@dataclass(frozen=True)
class _Data:
    lam: np.ndarray  # (k, N) eigenvalues of V_i, padded slots 1
    real: np.ndarray  # (k, N) 1 for real eigenvectors
    one: np.ndarray  # (k, N) Q_i' 1
    proj: np.ndarray  # (k, N) Q_i' y_i
    n: int
    study: list[str]


@dataclass(frozen=True)
class MultilevelPosterior:
    """Exact posterior on a ``(tau, omega)`` product grid.

    Attributes
    ----------
    tau, omega : numpy.ndarray
        Grid nodes ``(T,)`` and ``(W,)``.
    weights : numpy.ndarray
        ``(T, W)`` normalised posterior mass of each node (quadrature weight times density).
    mu_mean, mu_sd : numpy.ndarray
        ``(T, W)`` conditional posterior mean and SD of mu.
    study : list of str
        Study labels in order of first appearance.
    """

    tau: np.ndarray
    omega: np.ndarray
    weights: np.ndarray
    mu_mean: np.ndarray
    mu_sd: np.ndarray
    study: list[str]
    _data: _Data

    def _nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Nodes carrying mass above :data:`_NEGLIGIBLE`: tau, omega, weight (renormalised), mu mean, mu SD."""
        keep = self.weights > _NEGLIGIBLE
        tau, omega = np.meshgrid(self.tau, self.omega, indexing="ij")
        w = self.weights[keep]
        return tau[keep], omega[keep], w / w.sum(), self.mu_mean[keep], self.mu_sd[keep]

    def summary(self, name: str) -> dict[str, float]:
        """``{mean, sd, median, q025, q975}`` of ``"mu"``, ``"tau"``, ``"omega"`` or ``"theta_new"``.

        ``theta_new = mu + tau e1 + omega e2`` is the normal mixture with component variances
        ``mu_sd² + tau² + omega²``.
        """
        if name in ("mu", "theta_new"):
            tau, omega, w, mean, sd = self._nodes()
            sd = sd if name == "mu" else np.sqrt(sd**2 + tau**2 + omega**2)
            return mixture_summary(mean[None], sd[None], w)[0]
        if name == "tau":
            return _grid_summary(self.tau, self.weights.sum(axis=1))
        if name == "omega":
            return _grid_summary(self.omega, self.weights.sum(axis=0))
        raise ValueError(f"no summary of {name!r}: use mu, tau, omega or theta_new")

    def prob_mu_greater(self, value: float) -> float:
        """Posterior probability that mu exceeds ``value``."""
        _, _, w, mean, sd = self._nodes()
        return float(1.0 - mixture_cdf(np.array([[float(value)]]), mean[None], sd[None], w)[0, 0])

    def i2_summary(self, s2: float) -> dict[str, float]:
        """Summary of ``I² = (tau² + omega²) / (tau² + omega² + s2)`` (weighted node values, sorted)."""
        tau, omega, w, _, _ = self._nodes()
        total = tau**2 + omega**2
        return _grid_summary(total / (total + s2), w)

    def study_summaries(self) -> list[dict[str, float]]:
        """Summaries of each study effect ``theta_i = mu + u_i`` (normal mixtures over the grid).

        Given ``(tau, omega, mu)``, ``theta_i`` is normal with mean ``mu (1 - a_i h_i) + b_i h_i``
        and variance ``h_i = tau² / (1 + tau² a_i)`` (``a_i, b_i`` as in the module docstring);
        integrating mu's conditional normal adds ``(1 - a_i h_i)² mu_sd²``.
        """
        tau, omega, w, mu_mean, mu_sd = self._nodes()
        a, b = _study_sums(self._data, omega)
        h = tau[:, None] ** 2 / (1.0 + tau[:, None] ** 2 * a)
        shrink = 1.0 - a * h
        mean = mu_mean[:, None] * shrink + b * h
        sd = np.sqrt(h + shrink**2 * mu_sd[:, None] ** 2)
        return mixture_summary(mean.T, sd.T, w)


def _grid_summary(x: np.ndarray, w: np.ndarray) -> dict[str, float]:
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order] / w.sum()
    mean = float(w @ x)
    sd = float(np.sqrt(w @ (x - mean) ** 2))
    cdf = np.cumsum(w) - 0.5 * w
    med, lo, hi = np.interp([0.5, 0.025, 0.975], cdf, x)
    return {"mean": mean, "sd": sd, "median": float(med), "q025": float(lo), "q975": float(hi)}


def _arrange(yi: np.ndarray, V: np.ndarray, study: Sequence[str]) -> _Data:
    yi, V = np.asarray(yi, dtype=float), np.asarray(V, dtype=float)
    labels = np.asarray(study, dtype=str)
    if yi.ndim != 1 or V.shape != (yi.size, yi.size) or labels.shape != yi.shape or yi.size == 0:
        raise ValueError(f"need (n,) yi, (n, n) V and (n,) study, got {yi.shape}, {V.shape}, {labels.shape}")
    studies = list(dict.fromkeys(labels))
    groups = [np.flatnonzero(labels == s) for s in studies]
    k, N = len(groups), max(g.size for g in groups)
    Vb, y, real = np.zeros((k, N, N)), np.zeros((k, N)), np.zeros((k, N))
    for i, g in enumerate(groups):
        Vb[i, : g.size, : g.size] = V[np.ix_(g, g)]
        y[i, : g.size], real[i, : g.size] = yi[g], 1.0
    lam, Q = block_spectra(Vb, real.sum(axis=1), 1.0)
    if np.any(lam <= 0):
        raise ValueError("the sampling covariance of some study is not positive definite")
    return _Data(
        lam=lam,
        real=real,
        one=np.einsum("kab,ka->kb", Q, real),
        proj=np.einsum("kab,ka->kb", Q, y),
        n=yi.size,
        study=[str(x) for x in studies],
    )


def _study_sums(data: _Data, omega: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a_i = 1' A_i^-1 1`` and ``b_i = 1' A_i^-1 y_i`` at each omega (shape ``(len(omega), k)``)."""
    a = np.empty((omega.size, data.lam.shape[0]))
    b = np.empty_like(a)
    for lo in range(0, omega.size, _CHUNK):
        part = omega[lo : lo + _CHUNK]
        d = data.lam[None] + part[:, None, None] ** 2 * data.real[None]
        a[lo : lo + _CHUNK] = (data.one[None] ** 2 / d).sum(axis=2)
        b[lo : lo + _CHUNK] = (data.one[None] * data.proj[None] / d).sum(axis=2)
    return a, b


def _log_marginal(
    data: _Data, tau: np.ndarray, omega: float, m0: float, s0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log p(y | tau, omega)`` and the conditional mean and SD of mu, for a vector of tau at one omega."""
    d = data.lam + omega**2 * data.real
    a = (data.one**2 / d).sum(axis=1)
    b = (data.one * data.proj / d).sum(axis=1)
    c = (data.proj**2 / d).sum(axis=1)
    logdet_a = (np.log(d) * data.real).sum(axis=1)
    t2 = np.asarray(tau, dtype=float)[:, None] ** 2
    g = 1.0 + t2 * a[None, :]
    precision = (a / g).sum(axis=1) + 1.0 / s0**2
    r = (b / g).sum(axis=1) + m0 / s0**2
    quad = (c - t2 * b**2 / g).sum(axis=1) + m0**2 / s0**2 - r**2 / precision
    logdet = logdet_a.sum() + np.log(g).sum(axis=1) + np.log(s0**2 * precision)
    logml = -0.5 * (logdet + quad) - 0.5 * data.n * np.log(2.0 * np.pi)
    return logml, r / precision, 1.0 / np.sqrt(precision)


def _log_posterior_grid(
    data: _Data, tau: np.ndarray, omega: np.ndarray, priors: tuple[PriorSpec, PriorSpec, PriorSpec]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu_prior, tau_prior, omega_prior = priors
    m0, s0 = mu_prior.params
    out = [_log_marginal(data, tau, w, m0, s0) for w in omega]
    logml, mean, sd = (np.stack([o[j] for o in out], axis=1) for j in range(3))
    logpost = logml + tau_prior.logpdf(tau)[:, None] + omega_prior.logpdf(omega)[None, :]
    return logpost, mean, sd


def _upper(prior: PriorSpec) -> float:
    fam, p = prior.family, prior.params
    if fam == "uniform":
        return p[1]
    q = 1.0 - _TAIL
    if fam == "halfnormal":
        return float(stats.halfnorm.ppf(q, scale=p[0]))
    if fam == "lognormal":
        return float(stats.lognorm.ppf(q, s=p[1], scale=np.exp(p[0])))
    raise ValueError(f"the exact multilevel engine supports halfnormal, lognormal and uniform priors, got {prior}")


def _lower(prior: PriorSpec) -> float:
    return prior.params[0] if prior.family == "uniform" else 0.0


def _box(logpost: np.ndarray, x: np.ndarray, axis: int, support: tuple[float, float]) -> tuple[float, float]:
    keep = np.flatnonzero((logpost >= logpost.max() - _LOG_CUTOFF).any(axis=axis))
    step = x[1] - x[0]
    return max(support[0], x[keep[0]] - step), min(support[1], x[keep[-1]] + step)


def _gauss_nodes(lo: float, hi: float, panels: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(_GL_ORDER)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    return (mid[:, None] + half[:, None] * x[None, :]).ravel(), (half[:, None] * w[None, :]).ravel()


def exact_multilevel_posterior(
    yi: np.ndarray,
    V: np.ndarray,
    study: Sequence[str],
    *,
    mu_prior: PriorSpec,
    tau_prior: PriorSpec,
    omega_prior: PriorSpec,
    panels: int = 48,
) -> MultilevelPosterior:
    """Exact posterior of the three-level model (plain, no moderators) by 2-D quadrature.

    Parameters
    ----------
    yi : numpy.ndarray
        ``(n,)`` comparison effects.
    V : numpy.ndarray
        ``(n, n)`` sampling covariance (block diagonal by study).
    study : sequence of str
        ``(n,)`` study label of each comparison.
    mu_prior : PriorSpec
        Normal prior of mu.
    tau_prior, omega_prior : PriorSpec
        Priors of the SDs: halfnormal, lognormal or uniform.
    panels : int
        Gauss–Legendre panels (of 8 nodes) per axis.

    Returns
    -------
    MultilevelPosterior
    """
    if mu_prior.family != "normal":
        raise ValueError(f"the prior of mu must be normal:M:S, got {mu_prior}")
    priors = (mu_prior, tau_prior.require_positive("tau"), omega_prior.require_positive("omega"))
    data = _arrange(yi, V, study)
    support = [(_lower(p), _upper(p)) for p in priors[1:]]
    coarse = [np.linspace(lo, hi, _COARSE) for lo, hi in support]
    logpost, _, _ = _log_posterior_grid(data, coarse[0], coarse[1], priors)
    logpost = np.where(np.isfinite(logpost), logpost, -np.inf)
    tau_box = _box(logpost, coarse[0], 1, support[0])
    omega_box = _box(logpost, coarse[1], 0, support[1])
    tau, w_tau = _gauss_nodes(*tau_box, panels)
    omega, w_omega = _gauss_nodes(*omega_box, panels)
    logpost, mean, sd = _log_posterior_grid(data, tau, omega, priors)
    mass = np.exp(logpost - logpost.max()) * w_tau[:, None] * w_omega[None, :]
    return MultilevelPosterior(
        tau=tau, omega=omega, weights=mass / mass.sum(), mu_mean=mean, mu_sd=sd, study=data.study, _data=data
    )
