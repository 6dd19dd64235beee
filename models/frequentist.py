r"""Frequentist random-effects meta-analysis as metafor's ``rma()``, ``leave1out()`` and ``regtest()``.

These are the frequentist *anchors* of evmeta: the numbers a reader of the original paper
knows (DerSimonian–Laird / REML pooling, Egger's test, leave-one-out), reproduced exactly so
they can be printed beside the Bayesian answers. They are not the inferential method of evmeta.

Model (``k`` studies, ``p`` coefficients, design ``X``; ``X = 1`` for plain random effects)::

    y_i ~ N(x_i' beta, v_i + tau^2)

Given tau^2, ``W = diag(1 / (v_i + tau^2))``, ``beta_hat = (X'WX)^-1 X'Wy`` and
``Var(beta_hat) = (X'WX)^-1``; ``P = W - W X (X'WX)^-1 X'W``.

*DerSimonian–Laird* (method of moments), with ``W0 = diag(1/v_i)`` and ``P0`` the ``P`` of ``W0``::

    tau^2_DL = max(0, (Q_E - (k - p)) / tr(P0)),   Q_E = y' P0 y

*REML* maximises ``-1/2 [sum log(v_i + tau^2) + log|X'WX| + y'Py]`` by Fisher scoring, as
metafor does (Viechtbauer 2005)::

    tau^2 <- tau^2 + (y'PPy - tr(P)) / tr(PP),   step halved while tau^2 would be < 0

from the Hedges (HE) start, iterated to ``|Δtau^2| < 1e-10`` (metafor stops at 1e-5); tau^2
is truncated at 0 (if the REML score at 0 is <= 0 the estimate is 0).

Heterogeneity as metafor: ``s^2 = (k - p) / tr(P0)`` (the Higgins–Thompson typical
within-study variance for ``p = 1``), ``I^2 = 100 tau^2 / (tau^2 + s^2)``,
``H^2 = (tau^2 + s^2) / s^2``; ``Q_E ~ chi^2_{k-p}`` under homogeneity (``QEp``). Wald
intervals use z (metafor's default ``test="z"``): ``beta_hat ± z_{0.975} se``; the 95%
prediction interval is ``mu_hat ± z_{0.975} sqrt(se^2 + tau^2)`` (``predict.rma``).

``regtest`` is metafor's default Egger-type test (``model="rma"``, ``predictor="sei"``): the
mixed-effects meta-regression ``y_i ~ N(b0 + b1 sei_i, v_i + tau^2)`` fitted by the same method,
with the z test of ``b1``; ``b0`` is the "limit estimate" (effect of an infinitely precise study).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["METHODS", "RegTest", "RmaFit", "leave1out", "regtest", "rma_uni"]

METHODS = ("REML", "DL")
#: Two-sided 95% normal quantile, ``qnorm(0.975)``.
Z975: float = float(stats.norm.ppf(0.975))
#: Convergence threshold on the change of tau^2 between Fisher-scoring steps (metafor: 1e-5).
REML_THRESHOLD: float = 1e-10
REML_MAXITER: int = 1000


@dataclass(frozen=True)
class RmaFit:
    """A fitted frequentist random-effects model or meta-regression (metafor ``rma.uni``).

    Attributes
    ----------
    method : str
        ``"REML"`` or ``"DL"``.
    coef_names : tuple of str
        ``("mu",)`` for plain random effects, else the design's column names.
    beta, se, zval, pval, ci_lb, ci_ub : numpy.ndarray
        Coefficients, standard errors, Wald z statistics, two-sided p-values and 95% CIs.
    tau2, I2, H2, QE, QEp : float
        Between-study variance, I² (percent), H², residual heterogeneity Q and its p-value.
    k, p : int
        Number of studies and of coefficients.
    vt : float
        Typical within-study variance ``s^2`` used for I² and H².
    iterations : int
        Fisher-scoring iterations (0 for DL).
    """

    method: str
    coef_names: tuple[str, ...]
    beta: np.ndarray
    se: np.ndarray
    zval: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    tau2: float
    I2: float
    H2: float
    QE: float
    QEp: float
    k: int
    p: int
    vt: float
    iterations: int = 0

    @property
    def mu(self) -> float:
        """First coefficient (the pooled effect of a plain random-effects model)."""
        return float(self.beta[0])

    def predict(self) -> dict[str, float]:
        """``predict.rma`` for the intercept-only model: ``pred, se, ci_lb, ci_ub, pi_lb, pi_ub``."""
        if self.p != 1:
            raise ValueError("predict() without new moderator values is defined for the intercept-only model")
        mu, se = float(self.beta[0]), float(self.se[0])
        half = Z975 * np.sqrt(se**2 + self.tau2)
        return {
            "pred": mu,
            "se": se,
            "ci_lb": mu - Z975 * se,
            "ci_ub": mu + Z975 * se,
            "pi_lb": mu - half,
            "pi_ub": mu + half,
        }

    def to_dict(self) -> dict:
        """JSON-ready dict; for the intercept-only model with the keys of ``reference_public.json``."""
        out: dict = {
            "method": self.method,
            "k": self.k,
            "tau2": self.tau2,
            "I2": self.I2,
            "H2": self.H2,
            "QE": self.QE,
            "QEp": self.QEp,
        }
        if self.p == 1:
            pred = self.predict()
            out |= {
                "mu": self.mu,
                "se": float(self.se[0]),
                "ci_lb": pred["ci_lb"],
                "ci_ub": pred["ci_ub"],
                "zval": float(self.zval[0]),
                "pval": float(self.pval[0]),
                "pi_lb": pred["pi_lb"],
                "pi_ub": pred["pi_ub"],
            }
        else:
            out["coef"] = {
                name: {
                    "estimate": float(b),
                    "se": float(s),
                    "zval": float(z),
                    "pval": float(pv),
                    "ci_lb": float(lo),
                    "ci_ub": float(hi),
                }
                for name, b, s, z, pv, lo, hi in zip(
                    self.coef_names, self.beta, self.se, self.zval, self.pval, self.ci_lb, self.ci_ub, strict=True
                )
            }
        return out

    def __str__(self) -> str:
        kind = "Random-Effects Model" if self.p == 1 else "Mixed-Effects Model"
        table = pd.DataFrame(
            {
                "estimate": self.beta,
                "se": self.se,
                "zval": self.zval,
                "pval": self.pval,
                "ci.lb": self.ci_lb,
                "ci.ub": self.ci_ub,
            },
            index=list(self.coef_names),
        )
        return (
            f"{kind} (k = {self.k}; tau^2 estimator: {self.method})\n"
            f"tau^2 = {self.tau2:.4f} (tau = {np.sqrt(self.tau2):.4f}); I^2 = {self.I2:.2f}%; H^2 = {self.H2:.2f}\n"
            f"Test for (residual) heterogeneity: Q(df = {self.k - self.p}) = {self.QE:.4f}, p = {self.QEp:.4g}\n"
            f"{table.to_string(float_format=lambda z: f'{z:.4f}')}"
        )


def _prepare(
    yi: Sequence[float] | np.ndarray, vi: Sequence[float] | np.ndarray, X: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, v = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    if y.ndim != 1 or y.shape != v.shape or y.size == 0:
        raise ValueError(f"yi and vi must be 1-D arrays of equal, non-zero length, got {y.shape} and {v.shape}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("yi must be finite and vi finite and > 0")
    design = np.ones((y.size, 1)) if X is None else np.asarray(X, dtype=float)
    if design.ndim != 2 or design.shape[0] != y.size or not np.all(np.isfinite(design)):
        raise ValueError(f"X must be a finite ({y.size}, p) matrix, got shape {design.shape}")
    if y.size <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(
            f"need a full-rank design with more studies than coefficients (k={y.size}, p={design.shape[1]})"
        )
    return y, v, design


def _p_matrix(X: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``P = W - W X (X'WX)^-1 X'W`` and ``(X'WX)^-1`` for weights ``w``."""
    xtw = X.T * w
    cov = np.linalg.inv(xtw @ X)
    return np.diag(w) - xtw.T @ cov @ xtw, cov


def _tau2_dl(y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    p0, _ = _p_matrix(X, 1.0 / v)
    return max(0.0, (float(y @ p0 @ y) - (y.size - X.shape[1])) / float(np.trace(p0)))


def _tau2_he(y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    """Hedges' (HE) estimator: metafor's starting value for REML."""
    hat = X @ np.linalg.pinv(X)
    resid_maker = np.eye(y.size) - hat
    rss = float(y @ resid_maker @ y)
    return max(0.0, (rss - float(np.trace(resid_maker * v))) / (y.size - X.shape[1]))


def _reml_score(y: np.ndarray, v: np.ndarray, X: np.ndarray, tau2: float) -> tuple[float, float]:
    """Numerator ``y'PPy - tr(P)`` and Fisher information ``tr(PP)`` (both up to the factor 1/2)."""
    P, _ = _p_matrix(X, 1.0 / (v + tau2))
    Py = P @ y
    return float(Py @ Py - np.trace(P)), float(np.sum(P * P.T))


def _tau2_reml(y: np.ndarray, v: np.ndarray, X: np.ndarray) -> tuple[float, int]:
    """REML tau^2 by Fisher scoring from the HE start, step halving at the boundary (metafor's algorithm).

    Step halving approaches a boundary maximum geometrically; the limit is snapped to exactly 0
    when the restricted likelihood decreases from 0 (non-positive score there).
    """
    tau2 = _tau2_he(y, v, X)
    for iteration in range(1, REML_MAXITER + 1):
        num, info = _reml_score(y, v, X, tau2)
        adj = num / info
        while tau2 + adj < 0.0:  # halve the step; once it is negligible, step onto the boundary
            adj = adj / 2.0 if abs(adj) > REML_THRESHOLD else -tau2
        tau2 += adj
        if abs(adj) < REML_THRESHOLD:
            at_boundary = tau2 < 1e3 * REML_THRESHOLD and _reml_score(y, v, X, 0.0)[0] <= 0.0
            return (0.0 if at_boundary else tau2), iteration
    raise RuntimeError(f"REML Fisher scoring did not converge in {REML_MAXITER} iterations (tau2 = {tau2:.6g})")


def rma_uni(
    yi: Sequence[float] | np.ndarray,
    vi: Sequence[float] | np.ndarray,
    *,
    method: str = "REML",
    X: np.ndarray | None = None,
    coef_names: Sequence[str] | None = None,
) -> RmaFit:
    """Fit a random-effects model or meta-regression as metafor's ``rma(yi, vi, mods, method)``.

    Parameters
    ----------
    yi, vi : array_like
        Effect estimates and their sampling variances.
    method : {"REML", "DL"}
        tau^2 estimator.
    X : numpy.ndarray, optional
        ``(k, p)`` design including the intercept column; default a column of ones.
    coef_names : sequence of str, optional
        Coefficient names (default ``("mu",)`` without ``X``, else ``intrcpt, x1, ...``).

    Returns
    -------
    RmaFit

    Raises
    ------
    ValueError
        On invalid data, an unknown method or a rank-deficient design.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    y, v, design = _prepare(yi, vi, X)
    k, p = design.shape
    names = (
        tuple(coef_names)
        if coef_names is not None
        else (("mu",) if X is None else ("intrcpt", *(f"x{j}" for j in range(1, p))))
    )
    if len(names) != p:
        raise ValueError(f"coef_names must have {p} names, got {names}")
    tau2, iterations = _tau2_reml(y, v, design) if method == "REML" else (_tau2_dl(y, v, design), 0)
    _, cov = _p_matrix(design, 1.0 / (v + tau2))
    w = 1.0 / (v + tau2)
    beta = cov @ (design.T * w) @ y
    se = np.sqrt(np.diag(cov))
    p0, _ = _p_matrix(design, 1.0 / v)
    qe = float(y @ p0 @ y)
    vt = (k - p) / float(np.trace(p0))
    zval = beta / se
    return RmaFit(
        method=method,
        coef_names=names,
        beta=beta,
        se=se,
        zval=zval,
        pval=2.0 * stats.norm.sf(np.abs(zval)),
        ci_lb=beta - Z975 * se,
        ci_ub=beta + Z975 * se,
        tau2=float(tau2),
        I2=100.0 * tau2 / (tau2 + vt),
        H2=(tau2 + vt) / vt,
        QE=qe,
        QEp=float(stats.chi2.sf(qe, k - p)),
        k=k,
        p=p,
        vt=vt,
        iterations=iterations,
    )


def leave1out(
    yi: Sequence[float] | np.ndarray,
    vi: Sequence[float] | np.ndarray,
    *,
    study: Sequence[str] | None = None,
    method: str = "REML",
) -> pd.DataFrame:
    """Refit the random-effects model leaving out each study in turn (metafor ``leave1out``).

    Parameters
    ----------
    yi, vi : array_like
        Effect estimates and sampling variances (at least 3 studies).
    study : sequence of str, optional
        Study labels (default ``"1"``, ``"2"``, ...).
    method : {"REML", "DL"}
        tau^2 estimator.

    Returns
    -------
    pandas.DataFrame
        Index ``study`` (the omitted one); columns ``estimate, se, zval, pval, ci_lb, ci_ub,
        QE, QEp, tau2, I2, H2`` as in metafor.
    """
    y, v, _ = _prepare(yi, vi, None)
    if y.size < 3:
        raise ValueError("leave-one-out needs at least 3 studies")
    labels = [str(i + 1) for i in range(y.size)] if study is None else [str(s) for s in study]
    if len(labels) != y.size:
        raise ValueError(f"study must have {y.size} labels, got {len(labels)}")
    rows = []
    for i in range(y.size):
        keep = np.arange(y.size) != i
        fit = rma_uni(y[keep], v[keep], method=method)
        rows.append(
            {
                "estimate": fit.mu,
                "se": float(fit.se[0]),
                "zval": float(fit.zval[0]),
                "pval": float(fit.pval[0]),
                "ci_lb": float(fit.ci_lb[0]),
                "ci_ub": float(fit.ci_ub[0]),
                "QE": fit.QE,
                "QEp": fit.QEp,
                "tau2": fit.tau2,
                "I2": fit.I2,
                "H2": fit.H2,
            }
        )
    return pd.DataFrame(rows, index=pd.Index(labels, name="study"))


@dataclass(frozen=True)
class RegTest:
    """Egger-type regression test for funnel-plot asymmetry (metafor ``regtest``).

    Attributes
    ----------
    predictor : str
        ``"sei"`` (metafor's default).
    zval, pval : float
        z test of the predictor's coefficient (two-sided).
    limit_estimate, limit_ci_lb, limit_ci_ub : float
        Intercept: the estimated effect of an infinitely precise study, with its 95% CI.
    fit : RmaFit
        The mixed-effects meta-regression behind the test.
    """

    predictor: str
    zval: float
    pval: float
    limit_estimate: float
    limit_ci_lb: float
    limit_ci_ub: float
    fit: RmaFit

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "predictor": self.predictor,
            "model": "rma",
            "method": self.fit.method,
            "zval": self.zval,
            "pval": self.pval,
            "limit_estimate": self.limit_estimate,
            "limit_ci_lb": self.limit_ci_lb,
            "limit_ci_ub": self.limit_ci_ub,
            "tau2": self.fit.tau2,
        }

    def __str__(self) -> str:
        return (
            f"Regression test for funnel plot asymmetry (mixed-effects meta-regression, predictor: "
            f"{self.predictor}, tau^2 estimator: {self.fit.method})\n"
            f"test for funnel plot asymmetry: z = {self.zval:.4f}, p = {self.pval:.4f}\n"
            f"limit estimate (as sei -> 0): b = {self.limit_estimate:.4f} "
            f"(CI: {self.limit_ci_lb:.4f}, {self.limit_ci_ub:.4f})"
        )


def regtest(
    yi: Sequence[float] | np.ndarray,
    vi: Sequence[float] | np.ndarray,
    *,
    method: str = "REML",
) -> RegTest:
    """Egger's regression test as metafor's ``regtest(rma(yi, vi, method=method))`` (predictor sei).

    Parameters
    ----------
    yi, vi : array_like
        Effect estimates and sampling variances (at least 3 studies).
    method : {"REML", "DL"}
        tau^2 estimator of the mixed-effects meta-regression.

    Returns
    -------
    RegTest
    """
    v = np.asarray(vi, dtype=float)
    X = np.column_stack([np.ones(v.size), np.sqrt(v)])
    fit = rma_uni(yi, v, method=method, X=X, coef_names=("intrcpt", "sei"))
    return RegTest(
        predictor="sei",
        zval=float(fit.zval[1]),
        pval=float(fit.pval[1]),
        limit_estimate=float(fit.beta[0]),
        limit_ci_lb=float(fit.ci_lb[0]),
        limit_ci_ub=float(fit.ci_ub[0]),
        fit=fit,
    )
