r"""Exact posterior of the normal-normal random-effects model and its meta-regression.

Model (``k`` studies, ``p`` coefficients)::

    y_i | theta_i        ~ N(theta_i, v_i)              v_i known (sampling variances)
    theta_i | beta, tau  ~ N(x_i' beta, tau^2)           i = 1..k
    beta                 ~ N_p(b0, B0)                   conjugate normal prior
    tau                  ~ p(tau)                        any proper prior on [0, inf) (PriorSpec)

Plain random effects is ``X = 1`` (a column of ones) and ``beta = (mu,)`` with
``mu ~ N(M, S^2)`` from a ``normal:M:S`` prior string.

Integrating theta and beta out, ``y | tau ~ N(X b0, diag(v + tau^2) + X B0 X')``, so

    p(tau | y) ∝ p(tau) N(y; X b0, diag(v + tau^2) + X B0 X')

is one-dimensional and ``beta | tau, y ~ N(m(tau), V(tau))`` is conjugate GLS
(see :mod:`models.exact.grid`). The posterior is computed by quadrature over tau, as R's
``bayesmeta``/``bmr`` do (Röver 2020, J Stat Softw 93(6)): every marginal of a location-type
quantity is a normal mixture over the tau grid,

    p(beta_j | y)       = ∫ N(beta_j; m_j(tau), V_jj(tau)) p(tau | y) dtau
    p(theta_new | y, x) = ∫ N(theta; x'm(tau), x'V(tau)x + tau^2) p(tau | y) dtau
    p(theta_i | y)      = ∫ N(theta_i; l y_i + (1 - l) x_i'm, l v_i + (1 - l)^2 x_i'V x_i) p(tau | y) dtau,
                          l = l_i(tau) = tau^2 / (tau^2 + v_i)

(the last from ``theta_i | beta, tau, y ~ N(l y_i + (1 - l) x_i'beta, l v_i)`` with beta
integrated out given tau). Heterogeneity is also reported as
``I^2 = tau^2 / (tau^2 + s^2)`` with the Higgins-Thompson typical within-study variance
``s^2 = (k - 1) sum w / ((sum w)^2 - sum w^2)``, ``w = 1 / v`` (``s^2 = v_1`` when ``k = 1``,
the formula's limit for equal variances); it is increasing in tau, so its quantiles are the
mapped quantiles of tau.

These mixtures use the quadrature nodes by default (exact). bayesmeta instead uses its DIRECT
discrete approximation (Röver & Friede 2017, J Comput Graph Stat 26:217-222), off by up to a few
1e-3 in quantiles; ``mixture="bayesmeta"`` reproduces it (:mod:`models.exact.direct`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.exact.direct import DirectSupport, direct_support
from models.exact.grid import TauGrid, build_tau_grid
from models.exact.mixture import (
    SUMMARY_P,
    LocationMixture,
    mixture_cdf,
    mixture_moments,
    mixture_pdf,
    mixture_quantile,
    mixture_summary,
)
from models.exact.normal_model import NormalModel, build_model, tau_log_posterior, typical_variance
from models.priors import PriorSpec

__all__ = ["ExactPosterior", "exact_posterior", "typical_variance"]

_RESERVED = ("tau", "I2", "theta_new")
#: Ways to compute the location mixtures over tau (see :func:`exact_posterior`).
MIXTURES = ("quadrature", "bayesmeta")


def _names(given: Sequence[str] | None, default: list[str], what: str, *, unique: bool = True) -> list[str]:
    names = default if given is None else [str(n) for n in given]
    if len(names) != len(default) or (unique and len(set(names)) != len(names)):
        kind = "unique names" if unique else "labels"
        raise ValueError(f"{what} must be {len(default)} {kind}, got {names}")
    return names


def exact_posterior(
    yi: Sequence[float] | np.ndarray,
    vi: Sequence[float] | np.ndarray,
    *,
    tau_prior: PriorSpec,
    mu_prior: PriorSpec | None = None,
    X: np.ndarray | None = None,
    beta_mean: Sequence[float] | np.ndarray | None = None,
    beta_cov: np.ndarray | None = None,
    coef_names: list[str] | None = None,
    study: list[str] | None = None,
    n_nodes: int = 401,
    mixture: str = "quadrature",
) -> ExactPosterior:
    """Exact posterior of the normal-normal model by quadrature over tau.

    Parameters
    ----------
    yi, vi : array_like
        Effect estimates and their (known) sampling variances, one per study.
    tau_prior : PriorSpec
        Proper prior on tau living on [0, inf) (``PriorSpec.is_positive``).
    mu_prior : PriorSpec, optional
        ``normal:M:S`` prior on mu for the random-effects model (no ``X``); default
        :data:`models.priors.DEFAULT_MU_PRIOR`.
    X : numpy.ndarray, optional
        ``(k, p)`` design matrix for meta-regression; needs ``beta_mean`` and ``beta_cov``.
    beta_mean, beta_cov : array_like, optional
        Normal prior ``beta ~ N(beta_mean, beta_cov)`` of the regression coefficients.
    coef_names : list of str, optional
        Coefficient names; default ``["mu"]`` without ``X``, else ``["intercept", "x1", ...]``.
    study : list of str, optional
        Study labels, one per row (default ``"1"``, ``"2"``, ...); repeats are allowed (several
        comparisons from one paper).
    n_nodes : int
        Number of quadrature nodes over tau (default 401).
    mixture : {"quadrature", "bayesmeta"}
        How the normal mixtures over tau of mu, theta_new and the shrinkage estimates are
        computed: ``"quadrature"`` (default) on the quadrature nodes, i.e. exactly;
        ``"bayesmeta"`` with R bayesmeta's DIRECT approximation (:mod:`models.exact.direct`),
        to reproduce bayesmeta's numbers (random-effects model only). tau and I² are exact in
        both modes, and :meth:`ExactPosterior.sample` always draws from the exact posterior.

    Returns
    -------
    ExactPosterior

    Raises
    ------
    ValueError
        On non-finite data, ``vi <= 0``, mismatched lengths, an unsupported prior, badly
        shaped regression inputs, an unknown ``mixture`` or ``mixture="bayesmeta"`` with ``X``.
    TypeError
        If ``tau_prior`` is not a :class:`PriorSpec`.
    """
    if not isinstance(tau_prior, PriorSpec):
        raise TypeError(
            f"tau_prior must be a PriorSpec (PriorSpec.parse('halfnormal:1')), got {type(tau_prior).__name__}"
        )
    tau_prior.require_positive("tau")
    if n_nodes < 16:
        raise ValueError(f"n_nodes must be >= 16, got {n_nodes}")
    model, default_names = build_model(yi, vi, mu_prior=mu_prior, X=X, beta_mean=beta_mean, beta_cov=beta_cov)
    names = _names(coef_names, default_names, "coef_names")
    if any(n in _RESERVED for n in names) or "mu" in names[1:]:
        raise ValueError(f"coef_names may not use {_RESERVED} (or 'mu' except first), got {names}")
    labels = _names(study, [str(i + 1) for i in range(model.k)], "study", unique=False)
    return ExactPosterior(model, tau_prior, names, labels, regression=X is not None, n_nodes=n_nodes, mixture=mixture)


class ExactPosterior:
    """Posterior of the normal-normal model on a quadrature grid over tau.

    Built by :func:`exact_posterior`. Parameters are addressed by name: ``"tau"``, ``"I2"``,
    ``"mu"`` (alias of the first coefficient), any coefficient name and, for the
    random-effects model, ``"theta_new"`` (prediction for a new study; for meta-regression use
    :meth:`predict`).

    mu (the first coefficient), theta_new, :meth:`predict` and :meth:`shrinkage` are mixtures over
    the quadrature nodes (``mixture="quadrature"``, exact) or over bayesmeta's DIRECT support
    (``mixture="bayesmeta"``); tau, I² and :meth:`sample` are exact either way.

    Attributes
    ----------
    tau_grid, tau_density : numpy.ndarray
        Quadrature nodes over tau and the normalised posterior density there.
    log_marginal_likelihood : float
        ``log p(y)`` under the stated priors (the evidence).
    coef_names, study : list of str
    typical_variance : float
        Higgins-Thompson ``s^2`` used for I².
    mixture : str
        ``"quadrature"`` or ``"bayesmeta"``.
    direct : DirectSupport or None
        The DIRECT support with ``mixture="bayesmeta"`` (None otherwise).
    """

    def __init__(
        self,
        model: NormalModel,
        tau_prior: PriorSpec,
        coef_names: list[str],
        study: list[str],
        *,
        regression: bool,
        n_nodes: int = 401,
        mixture: str = "quadrature",
    ) -> None:
        if mixture not in MIXTURES:
            raise ValueError(f"mixture must be one of {MIXTURES}, got {mixture!r}")
        if mixture == "bayesmeta" and regression:
            raise ValueError("mixture='bayesmeta' is for the random-effects model only, not meta-regression (X)")
        self.model, self.tau_prior, self.regression, self.mixture = model, tau_prior, regression, mixture
        self.coef_names, self.study = list(coef_names), list(study)
        self.typical_variance = typical_variance(model.vi)
        self._grid = _make_grid(model, tau_prior, self.typical_variance, n_nodes)
        self.tau_grid, self.tau_density = self._grid.tau, self._grid.density
        self.log_marginal_likelihood = float(self._grid.log_evidence)
        self.direct: DirectSupport | None = direct_support(self) if mixture == "bayesmeta" else None
        nodes = (self._grid.tau, self._grid.weights) if self.direct is None else (self.direct.tau, self.direct.weight)
        self._mix = LocationMixture.on_nodes(model.conditional, *nodes, prune=self.direct is None)

    # ---- parameter resolution -------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of studies."""
        return self.model.k

    def _components(self, param: str) -> tuple[np.ndarray, np.ndarray]:
        """Mixture component means and sds for a location-type parameter."""
        j = 0 if param == "mu" else (self.coef_names.index(param) if param in self.coef_names else None)
        if j is None and param != "theta_new":
            raise ValueError(f"unknown parameter {param!r}; use one of {self.parameters}")
        if j is None and self.regression:
            raise ValueError("theta_new in a meta-regression depends on x: use predict(x_new)")
        return self._mix.linear(np.eye(len(self.coef_names))[j or 0], new_study=j is None)

    @property
    def parameters(self) -> list[str]:
        """Names accepted by the summary methods."""
        extra = [] if self.regression else ["theta_new"]
        mu = [] if "mu" in self.coef_names else ["mu"]
        return ["tau", "I2", *mu, *self.coef_names, *extra]

    def _tau_of_i2(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            return np.sqrt(self.typical_variance * x / (1.0 - x))

    def _i2(self, tau: np.ndarray) -> np.ndarray:
        return tau**2 / (tau**2 + self.typical_variance)

    # ---- distribution functions ------------------------------------------------------------
    def pdf(self, param: str, x: np.ndarray | float) -> np.ndarray:
        """Marginal posterior density of ``param`` at ``x``."""
        x = np.asarray(x, dtype=float)
        if param == "tau":
            with np.errstate(divide="ignore"):
                return np.exp(self._log_post(x.ravel()) - self.log_marginal_likelihood).reshape(x.shape)
        if param == "I2":
            t = self._tau_of_i2(x)
            with np.errstate(divide="ignore", invalid="ignore"):
                jac = 0.5 * np.sqrt(self.typical_variance) / (np.sqrt(x) * (1.0 - x) ** 1.5)
            inside = (x >= 0) & (x < 1)
            return np.where(inside, self.pdf("tau", np.where(inside, t, 0.0)) * jac, 0.0)
        mean, sd = self._components(param)
        return mixture_pdf(x.reshape(1, -1), mean[None], sd[None], self._mix.weights).reshape(x.shape)

    def cdf(self, param: str, x: np.ndarray | float) -> np.ndarray:
        """Marginal posterior CDF of ``param`` at ``x``."""
        x = np.asarray(x, dtype=float)
        if param == "tau":
            return self._grid.cdf(x)
        if param == "I2":
            return np.where(x >= 1.0, 1.0, self._grid.cdf(self._tau_of_i2(x)))
        mean, sd = self._components(param)
        return mixture_cdf(x.reshape(1, -1), mean[None], sd[None], self._mix.weights).reshape(x.shape)

    def quantile(self, param: str, p: np.ndarray | float) -> np.ndarray:
        """Marginal posterior quantiles of ``param`` for probabilities ``p`` in [0, 1].

        ``p = 0`` and ``1`` give the support ends: ``-inf``/``inf`` for location parameters, the
        ends of the quadrature range for tau and I².
        """
        p = np.asarray(p, dtype=float)
        if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
            raise ValueError("probabilities must lie in [0, 1]")
        if param in ("tau", "I2"):
            tau = self._grid.quantile(p)
            return tau if param == "tau" else self._i2(tau)
        mean, sd = self._components(param)
        q = mixture_quantile(p.ravel(), mean[None], sd[None], self._mix.weights).reshape(p.shape)
        return np.where(p == 0.0, -np.inf, np.where(p == 1.0, np.inf, q))

    def mean(self, param: str) -> float:
        """Posterior mean of ``param``."""
        return self._moments(param)[0]

    def sd(self, param: str) -> float:
        """Posterior standard deviation of ``param``."""
        return self._moments(param)[1]

    def _moments(self, param: str) -> tuple[float, float]:
        if param in ("tau", "I2"):
            g = self._grid
            values = g.tau if param == "tau" else self._i2(g.tau)
            mean = float(values @ g.weights)
            return mean, float(np.sqrt(((values - mean) ** 2) @ g.weights))
        mean, sd = self._components(param)
        m, s = mixture_moments(mean[None], sd[None], self._mix.weights)
        return float(m[0]), float(s[0])

    def prob_greater(self, param: str, value: float = 0.0) -> float:
        """Posterior probability ``P(param > value | y)``."""
        return float(1.0 - self.cdf(param, value))

    def summary(self, param: str) -> dict[str, float]:
        """``{mean, sd, median, q025, q975}`` of ``param`` (95% equal-tailed interval)."""
        mean, sd = self._moments(param)
        median, q025, q975 = (float(q) for q in self.quantile(param, SUMMARY_P))
        return {"mean": mean, "sd": sd, "median": median, "q025": q025, "q975": q975}

    def summary_table(self) -> pd.DataFrame:
        """Summaries of all parameters, one row each."""
        rows = {name: self.summary(name) for name in self.parameters}
        return pd.DataFrame.from_dict(rows, orient="index")

    def predict(self, x_new: Sequence[float] | np.ndarray, *, new_study: bool = True) -> dict[str, float]:
        """Posterior summary of ``x_new' beta`` (+ a new study's deviation if ``new_study``).

        Parameters
        ----------
        x_new : array_like
            Covariate vector of length ``p`` (``[1]`` for the random-effects model).
        new_study : bool
            True: predictive distribution of a new study's effect ``theta_new`` (adds tau^2);
            False: the expected effect ``x_new' beta`` (e.g. a subgroup mean).

        Returns
        -------
        dict
            ``{mean, sd, median, q025, q975}``.
        """
        x = np.asarray(x_new, dtype=float)
        if x.shape != (len(self.coef_names),) or not np.all(np.isfinite(x)):
            raise ValueError(f"x_new must be a finite vector of length {len(self.coef_names)}, got shape {x.shape}")
        mean, sd = self._mix.linear(x, new_study=new_study)
        return mixture_summary(mean[None], sd[None], self._mix.weights)[0]

    def shrinkage(self) -> pd.DataFrame:
        """Posterior of each study's true effect theta_i (shrinkage estimates).

        Returns
        -------
        pandas.DataFrame
            Index ``study``; columns ``yi, vi, mean, sd, median, q025, q975``.
        """
        y, v = self.model.yi, self.model.vi
        rows = mixture_summary(*self._mix.shrinkage(y, v, self.model.X), self._mix.weights)
        table = pd.DataFrame(rows, index=pd.Index(self.study, name="study"))
        table.insert(0, "vi", v)
        table.insert(0, "yi", y)
        return table

    def sample(self, n: int, *, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Independent draws from the joint posterior.

        tau by inversion of its CDF, then ``beta | tau``, each ``theta_i | beta, tau`` and (random
        effects) ``theta_new | beta, tau`` from their exact normal conditionals.

        Parameters
        ----------
        n : int
            Number of draws.
        rng : numpy.random.Generator
            Source of randomness (explicit, for reproducibility).

        Returns
        -------
        dict of numpy.ndarray
            ``tau``, ``I2``, ``beta`` (n, p), each coefficient by name, ``mu``,
            ``theta`` (n, k) and, for random effects, ``theta_new``.

        Raises
        ------
        TypeError
            If ``rng`` is not a :class:`numpy.random.Generator`.
        ValueError
            If ``n`` is not a positive integer.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator, e.g. np.random.default_rng(1)")
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        n = int(n)
        tau = self._grid.quantile(rng.random(n), polish=False)
        _, mean, cov = self.model.conditional(tau)
        beta = mean + np.einsum("nij,nj->ni", np.linalg.cholesky(cov), rng.standard_normal(mean.shape))
        y, v = self.model.yi, self.model.vi
        lam = tau[:, None] ** 2 / (tau[:, None] ** 2 + v[None, :])
        noise = rng.standard_normal((n, self.k))
        theta = lam * y + (1.0 - lam) * (beta @ self.model.X.T) + np.sqrt(lam * v) * noise
        out = {"tau": tau, "I2": self._i2(tau), "beta": beta, "mu": beta[:, 0], "theta": theta}
        out.update({name: beta[:, j] for j, name in enumerate(self.coef_names)})
        if not self.regression:
            out["theta_new"] = beta[:, 0] + tau * rng.standard_normal(n)
        return out

    def _log_post(self, tau: np.ndarray) -> np.ndarray:
        return tau_log_posterior(self.model, self.tau_prior, tau)

    def __str__(self) -> str:
        kind = "meta-regression" if self.regression else "random-effects meta-analysis"
        b0, B0 = self.model.beta_mean, self.model.beta_cov
        if not self.regression:
            prior = f"mu ~ normal:{b0[0]:g}:{np.sqrt(B0[0, 0]):g}"
        else:
            cov = (
                f"diag({', '.join(f'{x:g}' for x in np.diag(B0))})"
                if np.allclose(B0, np.diag(np.diag(B0)))
                else np.array2string(B0, precision=4, separator=", ").replace("\n", "")
            )
            prior = f"({', '.join(self.coef_names)}) ~ N(({', '.join(f'{x:g}' for x in b0)}), {cov})"
        table = self.summary_table().rename(columns={"q025": "eti95_lower", "q975": "eti95_upper"})
        support = (
            "the quadrature nodes (exact)"
            if self.direct is None
            else f"bayesmeta's DIRECT support ({self.direct.tau.size} points, approximate)"
        )
        return (
            f"Exact Bayesian {kind} (quadrature over tau, {self.tau_grid.size} nodes)\n"
            f"mixture = {self.mixture!r}: mu/theta are normal mixtures over {support}\n"
            f"k = {self.k} studies; priors: tau ~ {self.tau_prior}, {prior}\n"
            f"log marginal likelihood = {self.log_marginal_likelihood:.4f}; "
            f"I2 uses s2 = {self.typical_variance:.4g}; intervals: 95% equal-tailed (eti95)\n"
            f"{table.to_string(float_format=lambda z: f'{z:.4f}')}"
        )

    def __repr__(self) -> str:
        kind = "regression" if self.regression else "random-effects"
        return f"<ExactPosterior {kind} k={self.k} tau~{self.tau_prior} coefs={self.coef_names}>"


def _make_grid(model: NormalModel, prior: PriorSpec, s2: float, n_nodes: int) -> TauGrid:
    lower, upper = prior.support
    scales = {"uniform": prior.params[-1] - prior.params[0], "lognormal": np.exp(prior.params[0])}
    ref = min(np.sqrt(s2), scales.get(prior.family, prior.params[-1]))
    return build_tau_grid(
        lambda t: tau_log_posterior(model, prior, t), lower=lower, upper=upper, ref=ref, n_nodes=n_nodes
    )
