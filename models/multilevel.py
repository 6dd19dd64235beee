r"""Three-level normal model for effect-level data: comparisons nested in studies, for NUTS in PyMC 6.

Data: comparisons :math:`j = 1..n_i` of studies :math:`i = 1..k` (e.g. two doses against one
shared control), with effects :math:`y_{ij}`, an optional comparison-level design row
:math:`x_{ij}` and the known sampling covariance :math:`V_i` of study :math:`i` (diagonal
:math:`v_{ij}` plus the Gleser–Olkin covariances of comparisons sharing a control arm; block
diagonal across studies).

Model (Konstantopoulos 2011; Cheung 2014; metafor's ``rma.mv(yi, V, random = ~ 1 | study/comparison)``):

.. math::

    y_{ij} &= x_{ij}^\top \beta + u_i + w_{ij} + e_{ij}, \\
    u_i &\sim \mathcal N(0, \tau^2) \text{ (between studies)}, \qquad
    w_{ij} \sim \mathcal N(0, \omega^2) \text{ (between comparisons of a study)}, \qquad
    e_i \sim \mathrm{MVN}(0, V_i), \\
    \beta_j &\sim \mathcal N(m_j, s_j^2), \qquad \tau \sim p(\tau), \qquad \omega \sim p(\omega),

with :math:`x_{ij} = 1` and :math:`\beta = \mu` for the plain model. NUTS samples the marginal
model with :math:`u` and :math:`w` integrated out,

.. math::

    y_i \mid \beta, \tau, \omega \sim \mathrm{MVN}\big(X_i \beta,\; V_i + \tau^2 J_{n_i} + \omega^2 I_{n_i}\big),

(:math:`J` the matrix of ones), which has no funnel and only :math:`p + 2` parameters. The study
effect :math:`\theta_i = \beta_1 + u_i` (the intercept, i.e. :math:`\mu`, plus the study's
deviation) is drawn afterwards from its exact conditional (:func:`draw_study_theta`): with
:math:`A_i = V_i + \omega^2 I` and residuals :math:`r_i = y_i - X_i\beta`,

.. math::

    u_i \mid \beta, \tau, \omega, y \sim \mathcal N\!\left(
        \frac{1^\top A_i^{-1} r_i}{1/\tau^2 + 1^\top A_i^{-1} 1},\;
        \frac{1}{1/\tau^2 + 1^\top A_i^{-1} 1}\right).

The prediction for a new comparison of a new study is
:math:`\theta_{new} = \mu + \tau \varepsilon_1 + \omega \varepsilon_2`, and the multilevel
:math:`I^2 = (\tau^2 + \omega^2) / (\tau^2 + \omega^2 + s^2)` (Cheung 2014) with :math:`s^2` the
Higgins–Thompson typical within-study variance of the comparisons' :math:`v_{ij}`.

When :math:`\omega` is not identified. If every study has a single comparison, :math:`\tau^2` and
:math:`\omega^2` enter the likelihood only through their sum, so :math:`\omega` would be
determined by its prior alone. The rule (:func:`omega_identified`): the model has an
:math:`\omega` if and only if at least one study has two or more comparisons; otherwise it is the
plain random-effects model (no ``omega`` variable) and callers must say so.

Padding. The likelihood is **one** batched ``pm.MvNormal`` over ``(k, N)`` effects, :math:`N =
\max_i n_i`, whatever the number of comparisons per study: study :math:`i` is padded to :math:`N`
slots with :func:`models.multivariate.pad_missing`, exactly as the multivariate model pads
unreported outcomes. A padded slot has effect 0, mean 0, no covariance with any other slot and
variance :data:`~models.multivariate.PAD_VARIANCE` :math:`= 1/(2\pi)`; the between-study part
:math:`\Sigma = \tau^2 J_N + \omega^2 I_N` is multiplied elementwise by :math:`r_i r_i^\top`
(:math:`r_i` the 0/1 indicator of real slots), so the padded covariance is block diagonal with
the real block :math:`V_i + \tau^2 J + \omega^2 I` and a pad block :math:`I/(2\pi)` whose normal
factor at residual 0 is :math:`(2\pi \cdot \tfrac{1}{2\pi})^{-1/2} e^0 = 1`. The padded density
of each study therefore *equals* its unpadded one, and the graph has a fixed number of nodes;
only its tensors grow (``(k, N)`` effects, ``(k, N, N)`` covariances, ``(k, N, p)`` design). One
evaluation costs :math:`k` Cholesky factorisations of :math:`N \times N` matrices. The same
padded density can be evaluated without any factorisation (``form="spectral"``, :data:`FORMS`):
:math:`V_i` is eigen-decomposed once, :math:`\omega^2 I` shifts its eigenvalues and
:math:`\tau^2 J` is a rank-one update (Sherman–Morrison), an :math:`O(kN)` expression, ~50 times
cheaper at :math:`N = 18`. All data are ``pm.Data`` containers, so one compiled model serves every
dataset of the same structure (:mod:`analysis.fitting.nuts`).

Priors are the caller's (:class:`~models.priors.PriorSet` of the dataset's measure, see
:func:`models.priors.default_priors`): on the SMD scale mu ~ N(0, 3²), tau ~ HalfNormal(1) and
omega ~ HalfNormal(0.5) (``PriorSet.omega``: comparisons of one study share laboratory, strain and
often the control group, so they spread less than studies do); meta-regression slopes get a
normal prior passed in ``beta_priors``.

This module only builds graphs and does conditional draws; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from models.exact.multilevel import block_spectra
from models.multivariate import PAD_VARIANCE, pad_missing
from models.priors import PriorSpec
from models.random_effects import typical_within_variance

__all__ = [
    "FORMS",
    "StudyLayout",
    "build_multilevel_model",
    "draw_study_theta",
    "draw_theta_new",
    "i2_multilevel",
    "omega_identified",
    "study_layout",
    "study_theta_moments",
]


FORMS = ("mvnormal", "spectral")
"""Two evaluations of the same padded likelihood; both are one batched term over ``(k, N)``.

``"mvnormal"``: ``pm.MvNormal`` with the padded covariance (module docstring); one evaluation
factorises ``k`` ``N x N`` matrices, ``O(k N^3)``, and its gradient differentiates through them.
``"spectral"``: ``V_i = Q_i diag(lambda_i) Q_iᵀ`` is decomposed once (data), so
``A_i = V_i + omega² I = Q_i diag(lambda_i + omega²) Q_iᵀ`` and, by Sherman–Morrison for the rank-one
``tau² 1 1ᵀ``, with ``z_i = Q_iᵀ(y_i - X_i beta)``, ``o_i = Q_iᵀ 1``, ``d_ij = lambda_ij + omega²``,
``a_i = Σ_j o_ij² / d_ij``, ``b_i = Σ_j o_ij z_ij / d_ij``, ``g_i = 1 + tau² a_i``::

    log p(y_i) = -1/2 [ Σ_j log(2π d_ij) + log g_i + Σ_j z_ij² / d_ij - tau² b_i² / g_i ],

an ``O(k N)`` elementwise expression (``pm.CustomDist`` over the rotated effects ``Q_iᵀ y_i``,
whose Jacobian is 1). A padded slot has ``lambda = 1/(2π)``, no omega², ``o = z = 0``: its term is
``log(2π / (2π)) = 0``, the same padding argument. On fst_martins2025 (200 studies, N = 18) a
gradient costs ~10 ms as ``"mvnormal"`` and ~0.2 ms as ``"spectral"``; both give the same log
density and gradient to rounding (tests/test_multilevel.py).
"""


@dataclass(frozen=True)
class StudyLayout:
    """Comparisons arranged as ``(k, N)`` study-by-slot arrays, padded with :func:`~models.multivariate.pad_missing`.

    Attributes
    ----------
    study : list of str
        Study labels in order of first appearance.
    reported : numpy.ndarray
        ``(k, N)`` 1.0 for a real comparison, 0.0 for a padded slot.
    y : numpy.ndarray
        ``(k, N)`` effects, 0 in padded slots.
    V : numpy.ndarray
        ``(k, N, N)`` sampling covariances, with :data:`~models.multivariate.PAD_VARIANCE` on the
        diagonal of padded slots and 0 elsewhere outside the real block.
    X : numpy.ndarray
        ``(k, N, p)`` design, 0 in padded slots.
    row : numpy.ndarray
        ``(k, N)`` index of the comparison (input order) in each slot, -1 for a padded slot.
    """

    study: list[str]
    reported: np.ndarray
    y: np.ndarray
    V: np.ndarray
    X: np.ndarray
    row: np.ndarray

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.study)

    @property
    def slots(self) -> int:
        """Padded number of comparisons per study, ``N``."""
        return self.reported.shape[1]

    @property
    def n_comparisons(self) -> np.ndarray:
        """Number of comparisons of each study."""
        return self.reported.sum(axis=1).astype(int)


def omega_identified(study: Sequence[str]) -> bool:
    """True if some study has two or more comparisons (else omega is not identified and is left out).

    Parameters
    ----------
    study : sequence of str
        Study label of each comparison.
    """
    _, counts = np.unique(np.asarray(study, dtype=str), return_counts=True)
    return bool(counts.size and counts.max() >= 2)


def study_layout(yi: np.ndarray, V: np.ndarray, study: Sequence[str], X: np.ndarray | None = None) -> StudyLayout:
    """Arrange comparison-level data by study and pad every study to the largest number of comparisons.

    Parameters
    ----------
    yi : numpy.ndarray
        ``(n,)`` effects of the comparisons.
    V : numpy.ndarray
        ``(n, n)`` sampling covariance (covariances between comparisons of different studies
        must be zero).
    study : sequence of str
        ``(n,)`` study label of each comparison.
    X : numpy.ndarray, optional
        ``(n, p)`` design (default a column of ones).

    Returns
    -------
    StudyLayout

    Raises
    ------
    ValueError
        On mismatched shapes, non-finite values, covariance across studies, or a study block of
        ``V`` that is not positive definite.
    """
    yi, V = np.asarray(yi, dtype=float), np.asarray(V, dtype=float)
    labels = np.asarray(study, dtype=str)
    n = yi.size
    X = np.ones((n, 1)) if X is None else np.asarray(X, dtype=float)
    if yi.ndim != 1 or n == 0 or V.shape != (n, n) or labels.shape != (n,) or X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"need (n,) yi, (n, n) V, (n,) study and (n, p) X with n >= 1; got {yi.shape}, {V.shape}")
    if not (np.all(np.isfinite(yi)) and np.all(np.isfinite(V)) and np.all(np.isfinite(X))):
        raise ValueError("yi, V and X must be finite")
    order, index = np.unique(labels, return_index=True)
    studies = list(order[np.argsort(index)])
    code = {s: i for i, s in enumerate(studies)}
    ix = np.array([code[s] for s in labels])
    if np.any((ix[:, None] != ix[None, :]) & (V != 0.0)):
        raise ValueError("V has covariances between comparisons of different studies")
    counts = np.bincount(ix, minlength=len(studies))
    k, N, p = len(studies), int(counts.max()), X.shape[1]
    slot = np.zeros(n, dtype=int)
    row = np.full((k, N), -1)
    for i in range(k):
        members = np.flatnonzero(ix == i)
        slot[members] = np.arange(members.size)
        row[i, : members.size] = members
        block = V[np.ix_(members, members)]
        if not np.allclose(block, block.T) or np.linalg.eigvalsh(block).min() <= 0:
            raise ValueError(f"sampling covariance of study {studies[i]!r} is not symmetric positive definite")
    y = np.full((k, N), np.nan)
    y[ix, slot] = yi
    S = V[np.maximum(row, 0)[:, :, None], np.maximum(row, 0)[:, None, :]]  # pad entries: ignored by pad_missing
    reported, y_pad, S_pad = pad_missing(y, S)
    X_pad = np.zeros((k, N, p))
    X_pad[ix, slot] = X
    return StudyLayout(study=studies, reported=reported, y=y_pad, V=S_pad, X=X_pad, row=row)


def build_multilevel_model(
    layout: StudyLayout,
    *,
    tau_prior: PriorSpec,
    omega_prior: PriorSpec | None,
    beta_priors: Sequence[PriorSpec],
    coef_names: Sequence[str] = ("mu",),
    form: str = "mvnormal",
) -> pm.Model:
    """Build the marginal three-level model (see the module docstring).

    Parameters
    ----------
    layout : StudyLayout
        Padded data (:func:`study_layout`).
    tau_prior : PriorSpec
        Prior of the between-study SD; must live on ``[0, inf)``.
    omega_prior : PriorSpec or None
        Prior of the between-comparison SD (on ``[0, inf)``); ``None`` leaves omega out (required
        when no study has two comparisons, see :func:`omega_identified`).
    beta_priors : sequence of PriorSpec
        One normal prior per column of the design (for the plain model: the prior of ``mu``).
    coef_names : sequence of str
        ``("mu",)`` for the plain model, else the names of the design columns.
    form : {"mvnormal", "spectral"}
        How the (identical) padded likelihood is evaluated (see :data:`FORMS`).

    Returns
    -------
    pymc.Model
        Free: ``tau``, ``omega`` (unless left out) and ``mu`` or ``beta_<name>`` per coefficient
        (deterministic ``beta``, dim ``coef``); observed ``y`` (dims ``study, slot``; for
        ``"spectral"`` the rotated effects ``Q_iᵀ y_i``), one log-likelihood term per study.

    Raises
    ------
    ValueError
        If omega is asked for but not identified, or priors, design or form are invalid.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    p = layout.X.shape[2]
    if len(beta_priors) != p or len(coef_names) != p:
        raise ValueError(f"design has {p} columns but {len(beta_priors)} priors and names {list(coef_names)}")
    if any(prior.family != "normal" for prior in beta_priors):
        raise ValueError("every coefficient prior must be normal:M:S")
    tau_prior.require_positive("tau")
    if omega_prior is not None:
        omega_prior.require_positive("omega")
        if layout.n_comparisons.max() < 2:
            raise ValueError("omega is not identified: every study has a single comparison (pass omega_prior=None)")
    plain = p == 1 and coef_names[0] == "mu"
    coords = {"study": layout.study, "slot": list(range(layout.slots))} | ({} if plain else {"coef": list(coef_names)})
    with pm.Model(coords=coords) as model:
        beta = _coefficients(beta_priors, coef_names, plain)
        tau = tau_prior.to_pymc("tau")
        omega = None if omega_prior is None else omega_prior.to_pymc("omega")
        if form == "mvnormal":
            _mvnormal_likelihood(layout, beta, tau, omega)
        else:
            _spectral_likelihood(layout, beta, tau, omega)
    return model


def _coefficients(beta_priors: Sequence[PriorSpec], coef_names: Sequence[str], plain: bool) -> pt.TensorVariable:
    """``(p,)`` coefficient vector: ``mu`` alone, or the ``beta_<name>`` stacked as deterministic ``beta``."""
    if plain:
        return pt.stack([beta_priors[0].to_pymc("mu")])
    betas = [prior.to_pymc(f"beta_{name}") for prior, name in zip(beta_priors, coef_names, strict=True)]
    return pm.Deterministic("beta", pt.stack(betas), dims="coef")


def _mvnormal_likelihood(
    layout: StudyLayout, beta: pt.TensorVariable, tau: pt.TensorVariable, omega: pt.TensorVariable | None
) -> None:
    """``y_i ~ MVN(X_i beta, (tau² J + omega² I) ⊙ r_i r_iᵀ + V_pad,i)``: one batched MvNormal."""
    reported = pm.Data("reported", layout.reported, dims=("study", "slot"))
    V = pm.Data("V", layout.V, shape=layout.V.shape)
    X = pm.Data("X", layout.X, shape=layout.X.shape)
    location = (X * beta[None, None, :]).sum(axis=2)
    between = tau**2 * (reported[:, :, None] * reported[:, None, :])
    if omega is not None:
        between = between + omega**2 * (reported[:, :, None] * pt.eye(layout.slots)[None, :, :])
    pm.MvNormal("y", mu=location, cov=between + V, observed=layout.y, dims=("study", "slot"))


def _spectral_logp(
    value: pt.TensorVariable,
    mean: pt.TensorVariable,
    lam: pt.TensorVariable,
    one: pt.TensorVariable,
    real: pt.TensorVariable,
    tau: pt.TensorVariable,
    omega: pt.TensorVariable,
) -> pt.TensorVariable:
    """Per-study log density from the eigen-decomposition of ``V_i`` (see :data:`FORMS`)."""
    d = lam + omega**2 * real
    resid = value - mean
    a = (one**2 / d).sum(axis=-1)
    b = (one * resid / d).sum(axis=-1)
    g = 1.0 + tau**2 * a
    quad = (resid**2 / d).sum(axis=-1) - tau**2 * b**2 / g
    return -0.5 * (pt.log(2.0 * np.pi * d).sum(axis=-1) + pt.log(g) + quad)


def _spectral_likelihood(
    layout: StudyLayout, beta: pt.TensorVariable, tau: pt.TensorVariable, omega: pt.TensorVariable | None
) -> None:
    lam, Q = _spectra(layout)
    one = np.einsum("kab,ka->kb", Q, layout.reported)
    rotated_y = np.einsum("kab,ka->kb", Q, layout.y)
    rotated_x = np.einsum("kab,kap->kbp", Q, layout.X)
    real = pm.Data("reported", layout.reported, dims=("study", "slot"))
    lam_data = pm.Data("lam", lam, dims=("study", "slot"))
    one_data = pm.Data("one", one, dims=("study", "slot"))
    x_data = pm.Data("QX", rotated_x, shape=rotated_x.shape)
    mean = (x_data * beta[None, None, :]).sum(axis=2)
    pm.CustomDist(
        "y",
        mean,
        lam_data,
        one_data,
        real,
        tau,
        pt.constant(0.0) if omega is None else omega,
        logp=_spectral_logp,
        signature="(n),(n),(n),(n),(),()->(n)",
        observed=rotated_y,
        dims=("study", "slot"),
    )


def _spectra(layout: StudyLayout) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``(k, N)`` and eigenvectors ``(k, N, N)`` of each padded ``V_i``.

    The real comparisons of a study fill its first ``n_i`` slots; their block is decomposed on
    its own (:func:`models.exact.multilevel.block_spectra`), so eigenvector ``j < n_i`` lives on
    the real slots and the padded slots keep unit vectors and
    :data:`~models.multivariate.PAD_VARIANCE`: ``reported`` also flags the real eigenvectors.
    """
    return block_spectra(layout.V, layout.n_comparisons, PAD_VARIANCE)


#: Posterior draws processed at once by :func:`study_theta_moments` (bounds memory to ~draws x k x N).
_CHUNK = 256


def study_theta_moments(
    layout: StudyLayout, beta: np.ndarray, tau: np.ndarray, omega: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Conditional mean and SD of the study effects ``theta_i = beta_1 + u_i`` given each posterior draw.

    Parameters
    ----------
    layout : StudyLayout
        Padded data.
    beta : numpy.ndarray
        ``(..., p)`` coefficients per draw (``mu`` as ``(..., 1)``).
    tau : numpy.ndarray
        ``(...)`` between-study SD per draw.
    omega : numpy.ndarray or None
        ``(...)`` between-comparison SD per draw (``None``: no omega, i.e. 0).

    Returns
    -------
    mean, sd : numpy.ndarray
        ``(..., k)`` each.

    Notes
    -----
    ``V_i = Q_i diag(lambda_i) Q_iᵀ`` once, so ``A_i^{-1} = Q_i diag(1 / (lambda_i + omega² r_i)) Q_iᵀ``
    per draw without a factorisation; padded slots have a zero residual and a zero entry of
    ``Q_iᵀ 1_real``, so they add nothing. ``tau = 0`` gives the limit ``theta_i = beta_1``.
    """
    beta = np.asarray(beta, dtype=float)
    tau = np.asarray(tau, dtype=float)
    shape = tau.shape
    omega2 = (np.zeros(shape) if omega is None else np.asarray(omega, dtype=float) ** 2).ravel()
    beta = beta.reshape(-1, beta.shape[-1])
    tau2 = np.maximum(tau.ravel() ** 2, 1e-300)
    lam, Q = _spectra(layout)
    ones = np.einsum("kab,ka->kb", Q, layout.reported)  # Q_iᵀ r_i, (k, N)
    qy = np.einsum("kab,ka->kb", Q, layout.y)  # padded y is 0
    qx = np.einsum("kab,kap->kbp", Q, layout.X)  # padded X is 0
    mean, sd = np.empty((tau2.size, layout.k)), np.empty((tau2.size, layout.k))
    for lo in range(0, tau2.size, _CHUNK):
        part = slice(lo, lo + _CHUNK)
        proj = qy - np.einsum("kbp,sp->skb", qx, beta[part])
        d = lam + omega2[part, None, None] * layout.reported
        a = (ones**2 / d).sum(axis=-1)
        b = (ones * proj / d).sum(axis=-1)
        precision = 1.0 / tau2[part, None] + a
        mean[part] = beta[part, :1] + b / precision
        sd[part] = 1.0 / np.sqrt(precision)
    return mean.reshape(*shape, layout.k), sd.reshape(*shape, layout.k)


def draw_study_theta(
    layout: StudyLayout,
    beta: np.ndarray,
    tau: np.ndarray,
    omega: np.ndarray | None,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw the study effects ``theta_i = beta_1 + u_i`` from their exact conditional (:func:`study_theta_moments`).

    Returns
    -------
    numpy.ndarray
        ``(..., k)`` draws, one per posterior draw of ``beta``, ``tau``, ``omega``.
    """
    mean, sd = study_theta_moments(layout, beta, tau, omega)
    return mean + sd * rng.standard_normal(mean.shape)


def draw_theta_new(
    mu: np.ndarray, tau: np.ndarray, omega: np.ndarray | None, *, rng: np.random.Generator
) -> np.ndarray:
    """A new comparison of a new study, ``mu + tau e1 + omega e2``, once per posterior draw."""
    mu, tau = np.asarray(mu, dtype=float), np.asarray(tau, dtype=float)
    out = mu + tau * rng.standard_normal(mu.shape)
    if omega is not None:
        out = out + np.asarray(omega, dtype=float) * rng.standard_normal(mu.shape)
    return out


def i2_multilevel(tau: np.ndarray, omega: np.ndarray | None, vi: np.ndarray) -> np.ndarray:
    """Multilevel ``I² = (tau² + omega²) / (tau² + omega² + s²)``, ``s²`` the typical variance of ``vi``."""
    total = np.asarray(tau, dtype=float) ** 2
    if omega is not None:
        total = total + np.asarray(omega, dtype=float) ** 2
    return total / (total + typical_within_variance(np.asarray(vi, dtype=float)))
