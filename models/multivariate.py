r"""Multivariate (multi-outcome) random-effects meta-analysis for NUTS in PyMC 6.

Data, for studies :math:`i = 1..k` and outcomes :math:`j = 1..K`: benefit-oriented effects
:math:`y_{ij}` (natural-sign effect times the outcome's ``direction``, so that positive is
benefit on every outcome), reported only for a subset :math:`O_i` of the outcomes, and the
within-study sampling covariance :math:`S_i`: known, built from the variances and a fixed
within-study correlation (:func:`within_covariance`), or - the default - built from the
variances :math:`v_{ij}` and a within-study correlation :math:`\rho_w` that is a parameter,

.. math::

    S_i = D_i^{1/2}\big((1 - \rho_w) I + \rho_w J\big) D_i^{1/2}, \qquad
    D_i = \operatorname{diag}(v_{i\cdot}), \qquad \rho_w \sim \mathrm{Beta}(2, 2)

(:data:`models.priors.DEFAULT_RHO_WITHIN_PRIOR`).

Model:

.. math::

    y_{i,O_i} \mid \theta_i &\sim \mathrm{MVN}\big(\theta_{i,O_i},\; S_{i,O_iO_i}\big), \\
    \theta_i \mid \mu, \tau, R &\sim \mathrm{MVN}\big(\mu + B^\top x_i,\; \Sigma\big),
        \qquad \Sigma = \operatorname{diag}(\tau)\, R\, \operatorname{diag}(\tau) = L L^\top, \\
    \mu_j &\sim \mathcal N(m, s^2), \quad \beta_{pj} \sim \mathcal N(0, s^2), \quad
    \tau_j \sim p(\tau), \quad R \sim \mathrm{LKJ}(\eta).

The correlation R has one of three structures (:data:`STRUCTURES`): unstructured (the LKJ prior
above), compound symmetry :math:`R = (1 - \rho_b) I + \rho_b J` with
:math:`(\rho_b - l)/(1 - l) \sim \mathrm{Beta}(\eta, \eta)`, :math:`l = -1/(K-1)`, or
independent outcomes, :math:`R = I`.

The between-study covariance is built from its Cholesky factor, :math:`L = \operatorname{diag}(\tau)\,L_R`
with :math:`L_R` the Cholesky factor of :math:`R` (``pm.LKJCorr``, which in PyMC 6 returns the
factor; or ``pm.LKJCholeskyCov`` with ``sd_dist`` = the prior of :math:`\tau`, see
:data:`LKJ_FORMS`). :math:`x_i` are optional *centred* study-level moderators shared by all
outcomes, so :math:`\mu` stays the mean effect at the average moderator values.

Two parameterisations of the same posterior are built:

``"marginal"`` (default)
    :math:`\theta` is integrated out analytically; each study contributes only the outcomes it
    reports,

    .. math::

        y_{i,O_i} \mid \mu, \tau, R \sim
        \mathrm{MVN}\big(\mu_{O_i} + B_{\cdot O_i}^\top x_i,\; \Sigma_{O_iO_i} + S_{i,O_iO_i}\big),

    which is exact (the missing outcomes are marginalised, never imputed) and has no funnel, so
    NUTS sees only the ``K + K(K-1)/2 (+ pK)`` top-level parameters. The study effects, including
    the unreported ones, are then drawn from their exact conditional
    (:func:`models.multivariate_draws.draw_theta`):

    .. math::

        \theta_i \mid y, \cdot \sim \mathrm{MVN}\big(m_i + G_i (y_{i,O_i} - m_{i,O_i}),\;
        \Sigma - G_i \Sigma_{O_i\cdot}\big), \qquad
        G_i = \Sigma_{\cdot O_i} (\Sigma_{O_iO_i} + S_{i,O_iO_i})^{-1},

    with :math:`m_i = \mu + B^\top x_i`; and :math:`\theta_{new} \sim \mathrm{MVN}(\mu, \Sigma)`.

``"noncentred"``
    :math:`z_{ij} \sim \mathcal N(0,1)`, :math:`\theta_i = m_i + L z_i` (the non-centred Cholesky
    form), and the likelihood of the reported outcomes given :math:`\theta`; :math:`z_{ij}` of an
    unreported outcome is informed only through :math:`L`. Kept for comparison: on the default
    dataset it also samples without divergences but has ``kK`` (here 40) extra parameters, needs
    about twice the leapfrog steps per draw (31 vs 15) and gives lower ESS (min ESS_bulk ~1300
    vs ~1600). The marginal form is the limit of non-centring: the latent :math:`z` is
    integrated out exactly instead of sampled.

Size of the graph. The likelihood is **one** batched ``pm.MvNormal`` over all :math:`k` studies
and :math:`K` outcomes, whatever the missingness (:func:`pad_missing`): an unreported outcome of
study :math:`i` gets effect 0, mean 0, no covariance with the other outcomes and variance
:data:`PAD_VARIANCE` :math:`= 1/(2\pi)`, so its factor in the normal density,
:math:`(2\pi \cdot \tfrac{1}{2\pi})^{-1/2} e^{0} = 1`, is exactly one and the padded density of study
:math:`i` *equals* the density of its reported outcomes above (the padded covariance is block
diagonal). The number of nodes of the graph is therefore fixed: it does not depend on :math:`k`,
:math:`K` or the number :math:`P` of missingness patterns (the marginal form has 348 variables in
its log density and 618 in its gradient, both for the 4 default outcomes of the flagship dataset, :math:`P = 3`,
and for all 7, :math:`P = 8`); only its tensors grow, ``(k, K)`` effects and ``(k, K, K)`` covariances,
and one evaluation costs :math:`k` Cholesky factorisations of :math:`K \times K` matrices,
:math:`O(kK^3)`. Earlier versions built one ``pm.MvNormal`` per missingness pattern
(:func:`missingness_groups`), so the graph grew with :math:`P` (461 and 720 variables in the log
density, 1155 and 3243 in its gradient, for :math:`P = 3` and 8), and PyTensor's graph rewriting then
ran out of memory: it copies the stack traces kept on graph variables onto their replacements, and on
that graph a shared constant's trace list tripled at every ``switch(c, 0, 0)`` simplification. With 4
patterns compiling took 0.3 GB; with 6 or more (7 outcomes of the flagship dataset: 8) it passed 3 GB
within 20 s and kept growing.
This module only builds graphs and does conditional draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt

from models.multivariate_draws import draw_theta, draw_theta_new, marginal_logpdf
from models.priors import DEFAULT_LKJ_ETA, PriorSet, PriorSpec

__all__ = [
    "DEFAULT_LKJ_ETA",
    "LKJ_FORMS",
    "PAD_VARIANCE",
    "PARAMETERISATIONS",
    "STRUCTURES",
    "build_multivariate_model",
    "correlation_matrix",
    "correlation_prior_marginals",
    "cs_lower_bound",
    "draw_theta",
    "draw_theta_new",
    "marginal_logpdf",
    "missingness_groups",
    "outcome_pairs",
    "pad_missing",
    "within_covariance",
]


def _probe_blas_quietly() -> None:
    """Resolve PyTensor's BLAS flags once, without its "could not link to a BLAS" UserWarning.

    PyMC's LKJ transforms (both ``LKJCorr`` and ``LKJCholeskyCov``) contain matrix products whose C
    implementation makes PyTensor probe for a BLAS library the first time a graph is compiled; a
    pip-installed PyTensor has none and warns (a performance note, irrelevant for K <= 7 outcomes),
    which the test suite's ``filterwarnings = error`` turns into a failure at every compile because
    the flag is never cached. Resolving it here once caches ``config.blas__ldflags`` (``""``).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS", category=UserWarning)
        _ = pytensor.config.blas__ldflags


_probe_blas_quietly()

PARAMETERISATIONS = ("marginal", "noncentred")

STRUCTURES = ("unstructured", "cs", "independent")
"""Between-study correlation structures of Σ = diag(τ) R diag(τ).

``"unstructured"``: R ~ LKJ(η), K(K-1)/2 free correlations. ``"cs"`` (compound symmetry): one
shared correlation, R = (1 - ρ_b) I + ρ_b J, with ρ_b = l + (1 - l) u, u ~ Beta(η, η) on the
positive definite range (l, 1), l = -1/(K-1) (for K = 2 this is exactly the LKJ(η) marginal of the
single correlation). ``"independent"``: R = I (outcomes share information only through the
within-study covariances). With ~10 studies the K(K-1)/2 correlations of the unstructured form
are barely identified; the simpler structures are compared with it by PSIS-LOO over studies
(:mod:`analysis.fitting.multivariate_structures`).
"""

LKJ_FORMS = ("corr", "cholesky_cov")
"""How the LKJ prior enters the graph. Both give the same prior, Σ = diag(τ) R diag(τ), R ~ LKJ(η).

``"corr"`` (default): ``tau`` is its own variable (log-transformed, prior from its PriorSpec) and
the Cholesky factor of R is ``pm.LKJCorr`` (PyMC 6 returns the factor L_R, with the
``CholeskyCorrTransform``); L = diag(τ) L_R. ``"cholesky_cov"``: ``pm.LKJCholeskyCov`` with
``sd_dist`` = the prior of τ, whose unconstrained coordinates are the entries of L itself. In the
latter, τ_k -> 0 squeezes a whole row of L, a funnel between τ and the correlations: on the
default dataset (4 outcomes, 10 studies, rho_w = 0.5, 4 x 1000 draws, target_accept 0.95) NUTS
needed 76 leapfrog steps per draw (step size ~0.06, min ESS_bulk ~600) against 15 (step size
~0.25, min ESS_bulk ~1600) for ``"corr"``; neither diverged.
"""


def within_covariance(vi: np.ndarray, rho_within: float | np.ndarray) -> np.ndarray:
    """Within-study covariance ``S_i = D_i^(1/2) R_w D_i^(1/2)`` from variances and a correlation.

    Parameters
    ----------
    vi : numpy.ndarray
        ``(k, K)`` sampling variances (NaN where the outcome is not reported).
    rho_within : float or numpy.ndarray
        Assumed within-study correlation of the (benefit-oriented) effects: a scalar for every
        pair or a ``(K, K)`` correlation matrix.

    Returns
    -------
    numpy.ndarray
        ``(k, K, K)``; rows and columns of unreported outcomes are NaN.
    """
    vi = np.asarray(vi, dtype=float)
    corr = correlation_matrix(rho_within, vi.shape[1])
    sd = np.sqrt(vi)
    return sd[:, :, None] * corr[None] * sd[:, None, :]


def correlation_matrix(rho: float | np.ndarray, n: int) -> np.ndarray:
    """Validate a scalar or matrix correlation and return it as a positive definite ``(n, n)`` matrix."""
    if np.ndim(rho) == 0:
        r = float(rho)
        low = -1.0 / (n - 1) if n > 1 else -1.0
        if not (np.isfinite(r) and low < r < 1.0):
            raise ValueError(
                f"a scalar within-study correlation for {n} outcomes must lie in ({low:.3g}, 1), got {rho}"
            )
        return np.full((n, n), r) + (1.0 - r) * np.eye(n)
    mat = np.asarray(rho, dtype=float)
    if mat.shape != (n, n) or not np.all(np.isfinite(mat)):
        raise ValueError(f"within-study correlation matrix must be finite and {n}x{n}, got shape {mat.shape}")
    if not np.allclose(mat, mat.T) or not np.allclose(np.diag(mat), 1.0) or np.linalg.eigvalsh(mat).min() <= 0:
        raise ValueError("within-study correlation matrix must be symmetric, with unit diagonal, positive definite")
    return mat


def missingness_groups(yi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group studies by the set of outcomes they report.

    Parameters
    ----------
    yi : numpy.ndarray
        ``(k, K)`` effects, NaN where not reported.

    Returns
    -------
    list of (observed, rows)
        One entry per distinct pattern, in order of first appearance: the indices of the
        reported outcomes and of the studies with that pattern.

    Raises
    ------
    ValueError
        If a study reports no outcome.
    """
    reported = ~np.isnan(np.asarray(yi, dtype=float))
    if not reported.any(axis=1).all():
        raise ValueError(f"studies {np.flatnonzero(~reported.any(axis=1)).tolist()} report none of the outcomes")
    patterns: dict[tuple[bool, ...], list[int]] = {}
    for i, row in enumerate(reported):
        patterns.setdefault(tuple(row), []).append(i)
    return [(np.flatnonzero(p), np.array(rows)) for p, rows in patterns.items()]


PAD_VARIANCE = 1.0 / (2.0 * np.pi)
"""Variance of an unreported outcome in the padded likelihood: its normal factor at residual 0 is exactly 1."""


def pad_missing(yi: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad unreported outcomes so that one batched normal density equals that of the reported ones.

    Parameters
    ----------
    yi : numpy.ndarray
        ``(k, K)`` effects, NaN where not reported.
    S : numpy.ndarray
        ``(k, K, K)`` within-study covariances (entries of unreported outcomes are ignored).

    Returns
    -------
    reported : numpy.ndarray
        ``(k, K)`` 1.0 where reported, 0.0 where not (multiplies the mean, and Σ as an outer product).
    y : numpy.ndarray
        ``(k, K)`` effects with 0 where not reported.
    S_pad : numpy.ndarray
        ``(k, K, K)``: ``S_i`` on the reported rows and columns, :data:`PAD_VARIANCE` on the
        diagonal of an unreported outcome and 0 elsewhere, so ``Σ ⊙ (r_i r_iᵀ) + S_pad,i`` is block
        diagonal with the reported block ``Σ_OO + S_OO`` and a unit-density remainder.
    """
    yi, S = np.asarray(yi, dtype=float), np.asarray(S, dtype=float)
    seen = ~np.isnan(yi)
    both = seen[:, :, None] & seen[:, None, :]
    pad = (~seen)[:, :, None] * (PAD_VARIANCE * np.eye(yi.shape[1]))[None]
    return seen.astype(float), np.where(seen, yi, 0.0), np.where(both, S, 0.0) + pad


def outcome_pairs(outcomes: Sequence[str]) -> list[str]:
    """Labels ``"A~B"`` of the off-diagonal elements of R, row-major upper triangle."""
    return [f"{a}~{b}" for a, b in combinations(outcomes, 2)]


def _sd_dist(prior: PriorSpec, n: int) -> pt.TensorVariable:
    """The prior of tau as an unnamed ``.dist`` of size ``n`` (for ``LKJCholeskyCov(sd_dist=...)``)."""
    fam, p = prior.family, prior.params
    if fam == "halfnormal":
        return pm.HalfNormal.dist(sigma=p[0], size=n)
    if fam == "halfcauchy":
        return pm.HalfCauchy.dist(beta=p[0], size=n)
    if fam == "halfstudentt":
        return pm.HalfStudentT.dist(nu=p[0], sigma=p[1], size=n)
    if fam == "lognormal":
        return pm.LogNormal.dist(mu=p[0], sigma=p[1], size=n)
    if fam == "invgamma":
        return pm.InverseGamma.dist(alpha=p[0], beta=p[1], size=n)
    return pm.Uniform.dist(lower=p[0], upper=p[1], size=n)


def _check_inputs(
    yi: np.ndarray, S: np.ndarray, X: np.ndarray | None, study: Sequence[str], outcome: Sequence[str]
) -> None:
    k, K = yi.shape
    if K < 2 or len(outcome) != K or len(study) != k or S.shape != (k, K, K):
        raise ValueError(
            f"need (k, K>=2) effects with {len(study)} studies, {len(outcome)} outcomes and (k, K, K) S; "
            f"got {yi.shape}, {S.shape}"
        )
    if X is not None and X.shape[0] != k:
        raise ValueError(f"moderator matrix has {X.shape[0]} rows for {k} studies")
    for obs, rows in missingness_groups(yi):
        block = S[np.ix_(rows, obs, obs)]
        if not np.all(np.isfinite(block)) or np.linalg.eigvalsh(block).min() <= 0:
            raise ValueError(f"within-study covariance of studies {[study[i] for i in rows]} is not positive definite")


def build_multivariate_model(
    yi: np.ndarray,
    S: np.ndarray,
    *,
    study: Sequence[str],
    outcome: Sequence[str],
    priors: PriorSet | None = None,
    X: np.ndarray | None = None,
    coef_names: Sequence[str] = (),
    parameterisation: str = "marginal",
    lkj: str = "corr",
    structure: str = "unstructured",
    rho_within_prior: PriorSpec | None = None,
) -> pm.Model:
    """Build the multivariate random-effects model (see the module docstring).

    Parameters
    ----------
    yi : numpy.ndarray
        ``(k, K)`` benefit-oriented effects, NaN where an outcome is not reported.
    S : numpy.ndarray
        ``(k, K, K)`` within-study covariances (entries of unreported outcomes are ignored). With
        ``rho_within_prior`` only their diagonals, the variances, are used.
    study, outcome : sequence of str
        Labels of the ``study`` and ``outcome`` dimensions.
    priors : PriorSet, optional
        Priors (defaults: mu ~ N(0, 3²), tau ~ HalfNormal(1), R ~ LKJ(2)).
    X : numpy.ndarray, optional
        ``(k, p)`` centred moderator columns (no intercept); slopes ``beta`` (coef x outcome).
    coef_names : sequence of str
        Names of the ``p`` moderator columns.
    parameterisation : {"marginal", "noncentred"}
        θ integrated out (default) or θ = m + L z sampled explicitly.
    lkj : {"corr", "cholesky_cov"}
        How the LKJ prior of the unstructured R enters (see :data:`LKJ_FORMS`); default ``"corr"``.
    structure : {"unstructured", "cs", "independent"}
        Between-study correlation structure (:data:`STRUCTURES`).
    rho_within_prior : PriorSpec, optional
        If given, the within-study correlation is a parameter ``rho_within`` with this prior (inside
        (0, 1)) and ``S_i = D_i^(1/2) ((1 - rho_w) I + rho_w J) D_i^(1/2)``; else ``S`` is used as given.

    Returns
    -------
    pymc.Model
        Free: ``mu`` (outcome), ``tau`` (outcome), the correlation parameters of ``structure``
        (``chol_R`` or ``chol_cov`` unstructured, ``rho_shared_unit`` compound symmetry, none
        independent), optional ``rho_within``, ``beta`` and, for ``"noncentred"``, ``z``;
        deterministic ``tau`` (outcome), ``R`` (outcome, outcome_bis), ``rho`` (pair), ``rho_shared``
        (compound symmetry) and, for ``"noncentred"``, ``theta`` (study, outcome); observed ``y``
        (study, outcome), padded where not reported (:func:`pad_missing`), and data ``S`` (the
        padded within-study covariances) or ``sd_outer`` (products of the reported SEs).
    """
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
    if lkj not in LKJ_FORMS:
        raise ValueError(f"lkj must be one of {LKJ_FORMS}, got {lkj!r}")
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    priors = priors or PriorSet()
    yi, S = np.asarray(yi, dtype=float), np.asarray(S, dtype=float)
    X = None if X is None or np.size(X) == 0 else np.asarray(X, dtype=float)
    _check_inputs(yi, S, X, study, outcome)
    K = yi.shape[1]
    coords = {
        "study": list(study),
        "outcome": list(outcome),
        "outcome_bis": list(outcome),
        "pair": outcome_pairs(outcome),
    }
    if X is not None:
        coords["coef"] = list(coef_names)
    with pm.Model(coords=coords) as model:
        location = _location(priors, X)
        sigma, chol = _between_covariance(priors, K, lkj, structure)
        s_pad = _within_covariance(yi, S, rho_within_prior)
        if parameterisation == "marginal":
            _marginal_likelihood(yi, s_pad, location, sigma)
        else:
            _noncentred_likelihood(yi, s_pad, location, chol)
    return model


def _matmul(a: pt.TensorVariable, b: pt.TensorVariable) -> pt.TensorVariable:
    """Matrix product as a broadcast sum (tiny K: avoids PyTensor's BLAS Gemm/Dot C ops and their BLAS probe)."""
    return (a[:, :, None] * b[None, :, :]).sum(axis=1)


def _location(priors: PriorSet, X: np.ndarray | None) -> pt.TensorVariable:
    """``(k or 1, K)`` mean of θ_i: ``mu`` plus centred moderators times slopes."""
    m, s = priors.mu.params
    mu = pm.Normal("mu", mu=m, sigma=s, dims="outcome")
    if X is None:
        return mu[None, :]
    beta = pm.Normal("beta", mu=0.0, sigma=s, dims=("coef", "outcome"))
    return mu[None, :] + _matmul(pm.Data("X", X), beta)


def correlation_prior_marginals(
    structure: str, outcome: Sequence[str], eta: float, rho_within_prior: PriorSpec | None
) -> dict[str, tuple[float, float, float, float]]:
    """Prior marginal of every correlation parameter as a scaled beta ``(a, b, loc, scale)``.

    ``rho[A~B]`` (unstructured): the LKJ(η) marginal of one correlation of a K x K matrix,
    Beta(η - 1 + K/2, η - 1 + K/2) on (-1, 1) (Lewandowski, Kurowicka & Joe 2009);
    ``rho_shared`` (compound symmetry): Beta(η, η) on (-1/(K-1), 1); ``rho_within`` when estimated:
    its beta prior on (0, 1), or a uniform(A, B) as Beta(1, 1) on (A, B). Independent outcomes
    have no correlation parameter.
    """
    K = len(outcome)
    out: dict[str, tuple[float, float, float, float]] = {}
    if structure == "unstructured":
        a = eta - 1.0 + K / 2.0
        out |= {f"rho[{pair}]": (a, a, -1.0, 2.0) for pair in outcome_pairs(outcome)}
    elif structure == "cs":
        low = cs_lower_bound(K)
        out["rho_shared"] = (eta, eta, low, 1.0 - low)
    if rho_within_prior is not None:
        p = rho_within_prior.params
        if rho_within_prior.family == "beta":
            out["rho_within"] = (p[0], p[1], 0.0, 1.0)
        else:
            out["rho_within"] = (1.0, 1.0, p[0], p[1] - p[0])
    return out


def cs_lower_bound(K: int) -> float:
    """Smallest correlation of a positive definite K x K compound-symmetry matrix, -1/(K-1)."""
    return -1.0 / (K - 1)


def _correlation(priors: PriorSet, K: int, structure: str) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Correlation matrix R and its Cholesky factor for the ``cs`` and ``independent`` structures."""
    if structure == "independent":
        eye = pt.as_tensor_variable(np.eye(K))
        return eye, eye
    low = cs_lower_bound(K)
    unit = pm.Beta("rho_shared_unit", alpha=priors.lkj_eta, beta=priors.lkj_eta)
    rho = pm.Deterministic("rho_shared", low + (1.0 - low) * unit)
    corr = (1.0 - rho) * pt.as_tensor_variable(np.eye(K)) + rho * pt.ones((K, K))
    return corr, pt.linalg.cholesky(corr)


def _between_covariance(
    priors: PriorSet, K: int, lkj: str, structure: str
) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Σ = diag(τ) R diag(τ) and its Cholesky factor; registers ``tau``, ``R`` and ``rho`` (see :data:`STRUCTURES`)."""
    if structure == "unstructured" and lkj == "cholesky_cov":
        chol, corr, stds = pm.LKJCholeskyCov(
            "chol_cov",
            eta=priors.lkj_eta,
            n=K,
            sd_dist=_sd_dist(priors.tau, K),
            compute_corr=True,
            store_in_trace=False,
        )
        tau = pm.Deterministic("tau", stds, dims="outcome")
    else:
        tau = priors.tau.to_pymc("tau", dims="outcome")
        if structure == "unstructured":
            chol_r = pm.LKJCorr("chol_R", n=K, eta=priors.lkj_eta)
            corr = _matmul(chol_r, chol_r.T)
        else:
            corr, chol_r = _correlation(priors, K, structure)
        chol = tau[:, None] * chol_r
    pm.Deterministic("R", corr, dims=("outcome", "outcome_bis"))
    upper = np.triu_indices(K, 1)
    pm.Deterministic("rho", corr[upper], dims="pair")
    return _matmul(chol, chol.T), chol


def _within_covariance(yi: np.ndarray, S: np.ndarray, rho_within_prior: PriorSpec | None) -> pt.TensorVariable:
    """Padded within-study covariances (:func:`pad_missing`): data, or built from ``rho_within`` and the SEs."""
    reported, _, s_pad = pad_missing(yi, S)
    if rho_within_prior is None:
        # the within-study covariances are data, so that one compiled model serves every rho_w
        return pm.Data("S", s_pad, shape=s_pad.shape)
    both = reported[:, :, None] * reported[:, None, :]
    sd = np.sqrt(np.diagonal(s_pad, axis1=1, axis2=2))
    sd_outer = sd[:, :, None] * sd[:, None, :] * both
    pad = s_pad * (1.0 - both)
    rho_w = rho_within_prior.to_pymc("rho_within")
    off = 1.0 - np.eye(yi.shape[1])
    scale = 1.0 - off[None] + rho_w * off[None]
    return pm.Data("sd_outer", sd_outer, shape=sd_outer.shape) * scale + pad


def _marginal_likelihood(
    yi: np.ndarray, s_pad: pt.TensorVariable, location: pt.TensorVariable, sigma: pt.TensorVariable
) -> None:
    """``y_i ~ MVN(r_i ⊙ m_i, Σ ⊙ r_i r_iᵀ + S_pad,i)`` for all studies at once (:func:`pad_missing`)."""
    reported = (~np.isnan(yi)).astype(float)
    both = reported[:, :, None] * reported[:, None, :]
    cov = sigma[None, :, :] * both + s_pad
    y = np.where(reported > 0, yi, 0.0)
    pm.MvNormal("y", mu=location * reported, cov=cov, observed=y, dims=("study", "outcome"))


def _noncentred_likelihood(
    yi: np.ndarray, s_pad: pt.TensorVariable, location: pt.TensorVariable, chol: pt.TensorVariable
) -> None:
    z = pm.Normal("z", 0.0, 1.0, dims=("study", "outcome"))
    theta = pm.Deterministic("theta", location + _matmul(z, chol.T), dims=("study", "outcome"))
    reported = (~np.isnan(yi)).astype(float)
    y = np.where(reported > 0, yi, 0.0)
    pm.MvNormal("y", mu=theta * reported, cov=s_pad, observed=y, dims=("study", "outcome"))
