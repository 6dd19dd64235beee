r"""The publication-bias model ensemble (RoBMA-PSMA; Bartoš et al. 2023, Res Synth Methods 14:99).

Each model combines three components:

* **effect**: :math:`\mu = 0` (spike) or :math:`\mu \sim p(\mu)`;
* **heterogeneity**: :math:`\tau = 0` or :math:`\tau \sim p(\tau)`;
* **bias**: ``none``; a monotone step-function selection model on one-sided p-values
  (:mod:`models.selection`; weights :math:`\omega \sim` cumulative Dirichlet(1, …, 1)); PET,
  :math:`y_i \sim \mathcal N(\mu + \beta x_i, v_i + \tau^2)` with :math:`x_i` the study's
  imprecision and :math:`\beta \sim \text{Cauchy}^+(0, 1)`; or PEESE, the same with
  :math:`x_i^2` and :math:`\beta \sim \text{Cauchy}^+(0, 5)`.

For a standardised mean difference the imprecision is :math:`x_i = \sqrt{1/\tilde n_i}` (the
part of the SE that does not depend on the effect; Zwetsloot et al. 2017, eLife 6:e24260),
otherwise the standard error :math:`s_i` (:class:`BiasData`).

Prior model probabilities as in RoBMA-PSMA: 1/2 for each of effect and heterogeneity; bias
absent with 1/2, and the other half shared by the selection models (1/2 of it in equal parts),
PET (1/4) and PEESE (1/4). With the two default selection models each has 1/8.

Marginal likelihoods: every model has at most four continuous parameters, integrated by
:func:`models.exact.cube.integrate` in coordinates where the integrand is smooth
(:meth:`BiasModel.axes`): the prior CDF of mu and of the PET/PEESE coefficient, log tau, and
the stick-breaking fractions :math:`v_j \sim \text{Beta}(\alpha, (J - j)\alpha)` of the
weights' Dirichlet increments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product

import numpy as np
from scipy import stats

from models.priors import PriorSpec
from models.selection import (
    CUTPOINT_SETS,
    omega_from_increments,
    selection_log_lik,
    stick_breaking,
)

__all__ = [
    "BIAS_KINDS",
    "PEESE_PRIOR",
    "PET_PRIOR",
    "BiasData",
    "BiasModel",
    "EnsemblePriors",
    "ensemble",
]

BIAS_KINDS = ("none", "selection", "PET", "PEESE")
#: RoBMA-PSMA's priors of the PET and PEESE coefficients.
PET_PRIOR: PriorSpec = PriorSpec.parse("halfcauchy:1")
PEESE_PRIOR: PriorSpec = PriorSpec.parse("halfcauchy:5")
#: Grid cells evaluated at once (bounds memory for large k).
_CHUNK_CELLS = 2_000_000
#: Prior tail probability left out of the initial log-tau box.
_TAIL = 1e-10


@dataclass(frozen=True)
class BiasData:
    """One outcome's studies on the benefit scale.

    Attributes
    ----------
    yi, vi : numpy.ndarray
        Benefit-oriented effects and sampling variances.
    x : numpy.ndarray
        PET predictor (``sqrt(1/n~)`` for SMDs with group sizes, else the SE); PEESE uses ``x**2``.
    thresholds : dict
        Cut-point set -> ``(k, J-1)`` thresholds on the y scale (:mod:`models.selection`).
    predictor : str
        ``"sqrt_inv_n"`` or ``"sei"``; ``test``: ``"t"`` or ``"z"``.
    """

    yi: np.ndarray
    vi: np.ndarray
    x: np.ndarray
    thresholds: dict[tuple[float, ...], np.ndarray]
    predictor: str
    test: str

    @property
    def k(self) -> int:
        """Number of studies."""
        return int(self.yi.size)


@dataclass(frozen=True)
class EnsemblePriors:
    """Priors of the ensemble's parameters (alternative hypotheses) and its bias models.

    Attributes
    ----------
    mu, tau : PriorSpec
        Priors of the effect and of the heterogeneity under their alternatives.
    pet, peese : PriorSpec
        Priors of the PET and PEESE coefficients (on ``[0, inf)``).
    cutpoint_sets : tuple of tuple of float
        One selection model per cut-point set.
    alpha : float
        Concentration of the cumulative Dirichlet prior of the weights.
    bias : tuple of str
        Bias kinds in the ensemble (subset of :data:`BIAS_KINDS`, always with ``"none"``).
    """

    mu: PriorSpec
    tau: PriorSpec
    pet: PriorSpec = PET_PRIOR
    peese: PriorSpec = PEESE_PRIOR
    cutpoint_sets: tuple[tuple[float, ...], ...] = CUTPOINT_SETS
    alpha: float = 1.0
    bias: tuple[str, ...] = BIAS_KINDS

    def __post_init__(self) -> None:
        if self.mu.family != "normal":
            raise ValueError(f"the effect prior must be normal:M:S, got {self.mu}")
        self.tau.require_positive("tau")
        self.pet.require_positive("the PET coefficient")
        self.peese.require_positive("the PEESE coefficient")
        if "none" not in self.bias or not set(self.bias) <= set(BIAS_KINDS):
            raise ValueError(f"bias kinds must include 'none' and come from {BIAS_KINDS}, got {self.bias}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")


@dataclass(frozen=True)
class BiasModel:
    """One model of the ensemble.

    Attributes
    ----------
    effect, heterogeneity : bool
        Whether mu and tau are free (``False``: spike at 0).
    bias : str
        One of :data:`BIAS_KINDS`.
    cutpoints : tuple of float
        Cut-points of a selection model (empty otherwise).
    prior_prob : float
        Prior model probability.
    """

    effect: bool
    heterogeneity: bool
    bias: str
    cutpoints: tuple[float, ...] = ()
    prior_prob: float = 0.0
    priors: EnsemblePriors | None = field(default=None, repr=False, compare=False)

    @property
    def bias_name(self) -> str:
        """``none``, ``PET``, ``PEESE`` or ``selection(0.025, 0.05)``."""
        if self.bias == "selection":
            return "selection(" + ", ".join(f"{c:g}" for c in self.cutpoints) + ")"
        return self.bias

    @property
    def name(self) -> str:
        """E.g. ``mu+tau+selection(0.025, 0.05)``; ``mu0``/``tau0`` for the spikes."""
        return "+".join(["mu" if self.effect else "mu0", "tau" if self.heterogeneity else "tau0", self.bias_name])

    def axes(self) -> list[str]:
        """Names of the integration coordinates, in axis order.

        ``mu``: its prior CDF; ``log_tau``; ``PET``/``PEESE``: the coefficient's prior CDF;
        ``v1..v(J-1)``: stick-breaking fractions of the weights' Dirichlet increments.
        """
        names = (["mu"] if self.effect else []) + (["log_tau"] if self.heterogeneity else [])
        if self.bias in ("PET", "PEESE"):
            names.append(self.bias)
        if self.bias == "selection":
            names += [f"v{j + 1}" for j in range(len(self.cutpoints))]
        return names

    def boxes(self) -> list[tuple[float, float]]:
        """Initial integration box of each coordinate (:func:`models.exact.cube.integrate`)."""
        assert self.priors is not None
        tau = self.priors.tau.ppf(np.array([_TAIL, 1.0 - _TAIL]))
        box = {"mu": (0.0, 1.0), "log_tau": tuple(np.log(np.maximum(tau, 1e-300))), "PET": (0.0, 1.0)}
        return [box.get(name, (0.0, 1.0)) for name in self.axes()]

    def _alpha(self) -> np.ndarray:
        assert self.priors is not None
        return np.full(len(self.cutpoints) + 1, self.priors.alpha)

    def parameters(self, c: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Parameter values broadcast on the tensor grid of the coordinates ``c``.

        Keys ``mu``, ``tau`` (zeros for spikes), ``PET``/``PEESE``, ``e1..eJ`` (Dirichlet
        increments) and ``omega1..omegaJ`` (weights, ``omega1 = 1``).
        """
        assert self.priors is not None
        names, ndim = self.axes(), len(c)
        grid = {
            n: np.asarray(x, dtype=float).reshape([-1 if a == d else 1 for a in range(ndim)])
            for d, (n, x) in enumerate(zip(names, c, strict=True))
        }
        p = self.priors
        out = {
            "mu": p.mu.ppf(grid["mu"]) if self.effect else np.zeros(1),
            "tau": np.exp(grid["log_tau"]) if self.heterogeneity else np.zeros(1),
        }
        if self.bias == "PET":
            out["PET"] = p.pet.ppf(grid["PET"])
        if self.bias == "PEESE":
            out["PEESE"] = p.peese.ppf(grid["PEESE"])
        if self.bias == "selection":
            fractions = [grid[f"v{j + 1}"] for j in range(len(self.cutpoints))]
            increments = stick_breaking(fractions)
            for j, (e, w) in enumerate(zip(increments, omega_from_increments(increments), strict=True)):
                out[f"e{j + 1}"], out[f"omega{j + 1}"] = e, w
        return out

    def log_prior(self, c: Sequence[np.ndarray]) -> np.ndarray:
        """Log prior density of the coordinates (prior-CDF coordinates contribute 0)."""
        assert self.priors is not None
        names, ndim, alpha = self.axes(), len(c), self._alpha()
        total = np.zeros([1] * ndim)
        for d, (name, x) in enumerate(zip(names, c, strict=True)):
            x = np.asarray(x, dtype=float).reshape([-1 if a == d else 1 for a in range(ndim)])
            if name == "log_tau":
                total = total + self.priors.tau.logpdf(np.exp(x)) + x
            if name.startswith("v"):
                j = int(name[1:]) - 1
                total = total + stats.beta.logpdf(x, alpha[j], alpha[j + 1 :].sum())
        return total

    def log_density(self, data: BiasData, c: list[np.ndarray]) -> np.ndarray:
        """Log integrand of :func:`models.exact.cube.integrate`: log-likelihood plus log prior."""
        return self.log_lik(data, c) + self.log_prior(c)

    def log_lik(self, data: BiasData, u: list[np.ndarray]) -> np.ndarray:
        """Log-likelihood on the tensor grid of ``u`` (evaluated in chunks of the first axis)."""
        shape = tuple(x.size for x in u)
        cells = int(np.prod(shape)) * data.k if shape else data.k
        if not shape or cells <= _CHUNK_CELLS or shape[0] == 1:
            return self._log_lik(data, u)
        step = max(1, shape[0] * _CHUNK_CELLS // cells)
        parts = [self._log_lik(data, [u[0][i : i + step], *u[1:]]) for i in range(0, shape[0], step)]
        return np.concatenate(parts, axis=0)

    def _log_lik(self, data: BiasData, u: list[np.ndarray]) -> np.ndarray:
        par = self.parameters(u)
        mu, tau = par["mu"], par["tau"]
        if self.bias == "selection":
            e = [par[f"e{j + 1}"] for j in range(len(self.cutpoints) + 1)]  # omega follows from e
            out = selection_log_lik(data.yi, data.vi, data.thresholds[self.cutpoints], mu, tau, e)
        else:
            mean = mu[..., None]
            if self.bias == "PET":
                mean = mean + par["PET"][..., None] * data.x
            if self.bias == "PEESE":
                mean = mean + par["PEESE"][..., None] * data.x**2
            sigma = np.sqrt(data.vi + tau[..., None] ** 2)
            out = np.sum(stats.norm.logpdf(data.yi, mean, sigma), axis=-1)
        ndim = len(u)
        return out.reshape(tuple(x.size for x in u)) if ndim else np.asarray(out).reshape(())


def _bias_variants(priors: EnsemblePriors) -> list[tuple[str, tuple[float, ...], float]]:
    """(kind, cut-points, prior probability within the bias component) of each bias variant."""
    alternatives = [b for b in priors.bias if b != "none"]
    if not alternatives:
        return [("none", (), 1.0)]
    shares = {"selection": 0.5, "PET": 0.25, "PEESE": 0.25}
    total = sum(shares[b] for b in alternatives)
    out = [("none", (), 0.5)]
    for kind in alternatives:
        share = 0.5 * shares[kind] / total
        if kind == "selection":
            n = len(priors.cutpoint_sets)
            out += [("selection", tuple(float(c) for c in cuts), share / n) for cuts in priors.cutpoint_sets]
        else:
            out.append((kind, (), share))
    return out


def ensemble(priors: EnsemblePriors) -> list[BiasModel]:
    """All models of the ensemble with their prior probabilities (they sum to 1).

    Effect and heterogeneity: 1/2 each for the spike and the alternative. Bias: 1/2 none, the
    other half split selection : PET : PEESE = 2 : 1 : 1 over the kinds present (equal parts
    among the selection models); without alternatives, bias is absent with probability 1.
    """
    models = []
    for effect, het, (kind, cuts, p_bias) in product((False, True), (False, True), _bias_variants(priors)):
        models.append(BiasModel(effect, het, kind, cuts, 0.25 * p_bias, priors))
    return models
