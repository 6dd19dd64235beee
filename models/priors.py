"""Prior specifications written as short strings (the ``--tau-prior`` / ``--mu-prior`` syntax).

A prior string is ``family:param[:param]`` with these forms:

==================  ==============================  =====================================
string              distribution                    PyMC 6
==================  ==============================  =====================================
``halfnormal:S``    half-normal, scale S > 0        ``pm.HalfNormal(sigma=S)``
``halfcauchy:S``    half-Cauchy, scale S > 0        ``pm.HalfCauchy(beta=S)``
``halfstudentt:NU:S``  half-Student-t, NU > 0 d.o.f., scale S > 0  ``pm.HalfStudentT(nu=NU, sigma=S)``
``lognormal:M:S``   log-normal, log-mean M, log-sd S > 0  ``pm.LogNormal(mu=M, sigma=S)``
``uniform:A:B``     uniform on [A, B], A < B        ``pm.Uniform(lower=A, upper=B)``
``normal:M:S``      normal, mean M, sd S > 0        ``pm.Normal(mu=M, sigma=S)``
``invgamma:A:B``    inverse-gamma, shape A > 0,     ``pm.InverseGamma(alpha=A, beta=B)``
                    scale B > 0 (RoBMA's tau prior)
``beta:A:B``        beta on (0, 1), A > 0, B > 0    ``pm.Beta(alpha=A, beta=B)``
                    (the within-study correlation)
==================  ==============================  =====================================

Family names are case-insensitive and surrounding blanks are ignored; every parameter must be a
finite number.

Uniform priors: ``parse`` accepts any finite ``A < B`` (a uniform prior is meaningful for a
location parameter too), and :attr:`PriorSpec.is_positive` is true only when ``A >= 0``. Code that
uses a prior for a standard deviation such as tau calls :meth:`PriorSpec.require_positive`, which
rejects ``uniform`` with ``A < 0`` (and ``normal``) with a clear error instead of silently
truncating the prior.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "DEFAULT_LKJ_ETA",
    "DEFAULT_MU_PRIOR",
    "DEFAULT_OMEGA_PRIOR",
    "DEFAULT_RHO_WITHIN_PRIOR",
    "DEFAULT_SLOPE_PRIOR",
    "DEFAULT_TAU_PRIOR",
    "PRIOR_FORMS",
    "PriorSet",
    "PriorSpec",
    "default_priors",
    "measure_scale",
]

#: Parameter names per family, in string order.
_PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "halfnormal": ("S",),
    "halfcauchy": ("S",),
    "halfstudentt": ("NU", "S"),
    "lognormal": ("M", "S"),
    "uniform": ("A", "B"),
    "normal": ("M", "S"),
    "invgamma": ("ALPHA", "BETA"),
    "beta": ("ALPHA", "BETA"),
}

#: The accepted forms, for error messages and CLI help.
PRIOR_FORMS: str = ", ".join(f"{fam}:{':'.join(names)}" for fam, names in _PARAM_NAMES.items())

_HALF_FAMILIES = frozenset({"halfnormal", "halfcauchy", "halfstudentt"})


def _format_number(x: float) -> str:
    """Shortest string that parses back to exactly ``x`` (``1`` rather than ``1.0``)."""
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"invalid prior {text!r}: {why}; expected one of {PRIOR_FORMS}")


def _check(family: str, params: tuple[float, ...], text: str) -> None:
    """Raise a ValueError naming ``text`` unless ``family``/``params`` form a valid prior."""
    names = _PARAM_NAMES.get(family)
    if names is None:
        raise _bad(text, f"unknown family {family!r}")
    if len(params) != len(names):
        raise _bad(text, f"{family} takes {len(names)} parameter(s), got {len(params)}")
    values = dict(zip(names, params, strict=True))
    for name, value in values.items():
        if not math.isfinite(value):
            raise _bad(text, f"parameter {name}={value} is not finite")
    for name in ("S", "NU", "ALPHA", "BETA"):
        if name in values and values[name] <= 0:
            raise _bad(text, f"parameter {name} must be > 0, got {values[name]:g}")
    if family == "uniform" and values["A"] >= values["B"]:
        raise _bad(text, f"uniform needs A < B, got A={values['A']:g}, B={values['B']:g}")


@dataclass(frozen=True)
class PriorSpec:
    """A parsed prior: a distribution family and its parameters.

    Parameters
    ----------
    family : str
        One of ``halfnormal``, ``halfcauchy``, ``halfstudentt``, ``lognormal``, ``uniform``,
        ``normal``.
    params : tuple of float
        The family's parameters in string order (see the module docstring).

    Examples
    --------
    >>> p = PriorSpec.parse("halfnormal:0.5")
    >>> str(p), p.is_positive
    ('halfnormal:0.5', True)
    """

    family: str
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        family = str(self.family).strip().lower()
        object.__setattr__(self, "family", family)
        try:
            params = tuple(float(p) for p in self.params)
        except (TypeError, ValueError):
            raise _bad(f"{family}:{self.params}", "parameters must be numbers") from None
        object.__setattr__(self, "params", params)
        _check(family, params, ":".join([family, *map(str, params)]))

    @classmethod
    def parse(cls, text: str) -> PriorSpec:
        """Parse a prior string such as ``"halfnormal:1"`` or ``"halfstudentt:3:0.5"``.

        Parameters
        ----------
        text : str
            The prior string.

        Returns
        -------
        PriorSpec

        Raises
        ------
        ValueError
            On an unknown family, a wrong number of parameters, a non-numeric or non-finite
            parameter, or invalid values (scale or degrees of freedom <= 0, ``A >= B``).
        """
        if not isinstance(text, str) or not text.strip():
            raise _bad(str(text), "empty or not a string")
        family, *raw = (part.strip() for part in text.strip().split(":"))
        family = family.lower()
        if family not in _PARAM_NAMES:
            raise _bad(text, f"unknown family {family!r}")
        params = []
        for name, value in zip(_PARAM_NAMES[family], raw, strict=False):
            try:
                params.append(float(value))
            except ValueError:
                raise _bad(text, f"parameter {name}={value!r} is not a number") from None
        if len(raw) != len(_PARAM_NAMES[family]):
            raise _bad(text, f"{family} takes {len(_PARAM_NAMES[family])} parameter(s), got {len(raw)}")
        _check(family, tuple(params), text)
        return cls(family, tuple(params))

    def __str__(self) -> str:
        return ":".join([self.family, *(_format_number(p) for p in self.params)])

    @property
    def is_positive(self) -> bool:
        """True if the prior puts all its mass on ``[0, inf)`` (usable for tau)."""
        if self.family == "uniform":
            return self.params[0] >= 0.0
        return self.family in _HALF_FAMILIES or self.family in ("lognormal", "invgamma")

    @property
    def support(self) -> tuple[float, float]:
        """Closed support ``(lower, upper)`` of the density."""
        if self.family == "uniform":
            return self.params[0], self.params[1]
        if self.family == "beta":
            return 0.0, 1.0
        if self.is_positive:
            return 0.0, math.inf
        return -math.inf, math.inf

    def require_positive(self, name: str = "tau") -> PriorSpec:
        """Return ``self`` if it is a valid prior for a standard deviation, else raise.

        Raises
        ------
        ValueError
            If the prior has mass below zero (``normal``, ``uniform`` with ``A < 0``).
        """
        if not self.is_positive:
            raise ValueError(
                f"prior {str(self)!r} for {name} must live on [0, inf): use halfnormal:S, "
                "halfcauchy:S, halfstudentt:NU:S, lognormal:M:S, invgamma:A:B or uniform:A:B with A >= 0"
            )
        return self

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at ``x`` (``-inf`` outside the support).

        Parameters
        ----------
        x : array_like
            Evaluation points.

        Returns
        -------
        numpy.ndarray
            Log density, same shape as ``x``.
        """
        x = np.asarray(x, dtype=float)
        if self.family == "halfstudentt":
            dens = math.log(2.0) + stats.t.logpdf(x, self.params[0], scale=self.params[1])
            return np.where(x >= 0, dens, -np.inf)
        return self.scipy_dist().logpdf(x)

    def scipy_dist(self) -> Any:
        """The prior as a frozen :mod:`scipy.stats` distribution (``cdf``, ``ppf``, ``logpdf``).

        ``halfstudentt`` is the Student-t folded at 0 (``scipy.stats.t`` with ``|x|``), built from
        the t distribution's ``cdf``/``ppf`` by :class:`_HalfT`. One object per family and parameters
        (:func:`_frozen_dist`): freezing a scipy distribution rebuilds its docstrings and signature,
        which was half of an exact-engine fit's time (issue 19).
        """
        return _frozen_dist(self.family, tuple(float(v) for v in self.params))

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Quantile function (inverse CDF) at probabilities ``u`` in [0, 1]."""
        return np.asarray(self.scipy_dist().ppf(np.asarray(u, dtype=float)), dtype=float)

    def to_pymc(self, name: str, dims: str | None = None) -> Any:
        """Create the matching PyMC 6 random variable in the current model context.

        Parameters
        ----------
        name : str
            Variable name.
        dims : str, optional
            Model dimension name(s) for a vector of independent draws.

        Returns
        -------
        pytensor.tensor.TensorVariable
            The free random variable (PyMC adds the usual log / interval transform).
        """
        import pymc as pm  # imported lazily: the exact engine does not need PyMC

        fam, p = self.family, [float(v) for v in self.params]
        kwargs: dict[str, Any] = {} if dims is None else {"dims": dims}
        if fam == "halfnormal":
            return pm.HalfNormal(name, sigma=p[0], **kwargs)
        if fam == "halfcauchy":
            return pm.HalfCauchy(name, beta=p[0], **kwargs)
        if fam == "halfstudentt":
            return pm.HalfStudentT(name, nu=p[0], sigma=p[1], **kwargs)
        if fam == "lognormal":
            return pm.LogNormal(name, mu=p[0], sigma=p[1], **kwargs)
        if fam == "uniform":
            return pm.Uniform(name, lower=p[0], upper=p[1], **kwargs)
        if fam == "invgamma":
            return pm.InverseGamma(name, alpha=p[0], beta=p[1], **kwargs)
        if fam == "beta":
            return pm.Beta(name, alpha=p[0], beta=p[1], **kwargs)
        return pm.Normal(name, mu=p[0], sigma=p[1], **kwargs)


class _HalfT:
    """Half-Student-t distribution (the t folded at 0): the ``cdf``/``ppf``/``logpdf`` trio."""

    def __init__(self, nu: float, scale: float) -> None:
        self._t = stats.t(nu, scale=scale)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return np.clip(2.0 * self._t.cdf(x) - 1.0, 0.0, 1.0)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return self._t.ppf(0.5 + 0.5 * np.asarray(u, dtype=float))

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return np.where(x >= 0, math.log(2.0) + self._t.logpdf(x), -np.inf)


@functools.lru_cache(maxsize=256)
def _frozen_dist(family: str, p: tuple[float, ...]) -> Any:
    """The frozen scipy distribution of a prior family with parameters ``p`` (cached: frozen objects are immutable)."""
    if family == "halfnormal":
        return stats.halfnorm(scale=p[0])
    if family == "halfcauchy":
        return stats.halfcauchy(scale=p[0])
    if family == "halfstudentt":
        return _HalfT(p[0], p[1])
    if family == "lognormal":
        return stats.lognorm(s=p[1], scale=math.exp(p[0]))
    if family == "uniform":
        return stats.uniform(loc=p[0], scale=p[1] - p[0])
    if family == "invgamma":
        return stats.invgamma(p[0], scale=p[1])
    if family == "beta":
        return stats.beta(p[0], p[1])
    return stats.norm(loc=p[0], scale=p[1])


DEFAULT_MU_PRIOR: PriorSpec = PriorSpec.parse("normal:0:3")
"""Default prior on the pooled effect mu (SMD scale): N(0, 3^2).

Weakly informative for standardised mean differences in animal studies: pooled SMDs beyond
+/-3 are rare even in preclinical work, so N(0, 3^2) keeps ~68% of its mass in +/-3 and ~95%
in +/-6, i.e. it rules out nothing plausible while excluding absurd values. It is centred on
no effect, so it cannot favour either direction.
"""

DEFAULT_TAU_PRIOR: PriorSpec = PriorSpec.parse("halfnormal:1")
"""Default prior on the between-study standard deviation tau (SMD scale): HalfNormal(1).

Heterogeneity in preclinical SMDs is typically of order tau = 0.5-1; HalfNormal(1) has median
0.67 and 95th percentile 1.96, so it supports these values and substantial heterogeneity while
shrinking implausibly large tau (> 3, prior probability 0.3%). It is proper, so the posterior is
proper even for k = 1 and the marginal likelihood is defined.
"""


DEFAULT_OMEGA_PRIOR: PriorSpec = PriorSpec.parse("halfnormal:0.5")
"""Default prior on the between-comparison SD omega within a study (SMD scale): HalfNormal(0.5).

Comparisons of one study (doses, native against engineered formulations, drugs of one class
against one control) share the laboratory, strain, induction, outcome measurement and often
the same control group, so they differ by less than independent studies do: a spread of 0.5
SMD between the arms of one study is already a large dose or formulation effect.
HalfNormal(0.5) has median 0.34 and 95th percentile 0.98, so it supports anything from no
within-study heterogeneity to about tau's typical size, and gives omega > 1.5 prior
probability 0.3%, as the tau default does for tau > 3. With two comparisons in a few studies
the data say little about omega, so this prior matters there (prior sensitivity: the report's
prior grid); with many multi-arm studies it does not.
"""


#: Default prior of the small-study bias slope beta1 of PET/PEESE: N(0, 5²). On the SE or
#: sqrt(1/n~) scale of animal studies (about 0.3–0.8) a 1-SMD difference between the smallest and
#: the largest study is beta1 ≈ 2, so N(0, 5²) is weak and centred on no small-study effect.
DEFAULT_SLOPE_PRIOR: PriorSpec = PriorSpec.parse("normal:0:5")
DEFAULT_LKJ_ETA: float = 2.0
"""LKJ shape of the multivariate model's between-study correlation matrix R: eta = 2.

The marginal prior of each correlation is Beta(eta - 1 + K/2, eta - 1 + K/2) on (r + 1)/2: for
K = 4 outcomes Beta(3, 3), 95% of its mass in about (-0.73, 0.73) and SD 0.38; for K = 2
Beta(2, 2). With ~10 studies the likelihood says little about R, and eta = 1 (uniform over
correlation matrices) leaves mass at |r| -> 1 where Sigma is singular and the posterior
geometry degenerates; eta = 2 gently pulls away from that boundary while still allowing
strong correlations (the usual weakly informative choice, e.g. Stan's and brms' examples).
"""

DEFAULT_RHO_WITHIN_PRIOR: PriorSpec = PriorSpec.parse("beta:2:2")
"""Prior of the within-study correlation rho_w of two outcomes' benefit-oriented effects: Beta(2, 2).

Summary data do not report it. Two SMDs computed on the same animals correlate, to first order,
as the two measures do between animals (Gleser & Olkin 2009). Between animals, trabecular
micro-CT indices are strongly but unequally correlated: BV/TV with Tb.N and with Tb.Th
positively, Tb.Sp negatively with BV/TV and Tb.N, Tb.Th only weakly with Tb.N and Tb.Sp; reported
values span |r| ~ 0.2-0.9 (the reason :data:`analysis.fitting.multivariate_data.DEFAULT_RHO_WITHIN`
used to fix a middle value, 0.5). After the benefit flip (Tb.Sp times -1) these correlations are
positive. One scalar rho_w stands for all pairs, so its prior has to cover the whole range:
Beta(2, 2) has mean and median 0.5 (the former fixed value), SD 0.22, 95% of its mass in
(0.09, 0.91), and vanishes at 0 and 1 (a within-study covariance of rank one is implausible).
Negative values are excluded; for outcomes that may correlate negatively on the benefit scale
fix rho_w instead (``--rho-within``). The data say little about rho_w: it is confounded with the
between-study correlations, which is why the report shows its prior beside its posterior.
"""


def _check_correlation_prior(prior: PriorSpec) -> None:
    """Raise unless ``prior`` lives inside (0, 1): beta, or uniform with 0 <= A < B <= 1."""
    low, high = prior.support
    if prior.family not in ("beta", "uniform") or low < 0.0 or high > 1.0:
        raise ValueError(f"the prior of rho_within must be beta:A:B or uniform:A:B inside [0, 1], got {prior}")


@dataclass(frozen=True)
class PriorSet:
    """Every prior of evmeta's models, parsed once where the user gives them (CLI, Python API).

    Attributes
    ----------
    mu : PriorSpec
        Normal prior of the location: mu of the random-effects and selection models, the
        intercept beta0 of PET/PEESE, each mu_k of the multivariate model. Default N(0, 3²).
    tau : PriorSpec
        Prior of each between-study SD (on [0, inf)). Default HalfNormal(1).
    slope : PriorSpec
        Normal prior of the PET/PEESE bias slope beta1. Default :data:`DEFAULT_SLOPE_PRIOR`.
    omega : PriorSpec
        Prior of the between-comparison SD within a study of the multilevel models (on
        [0, inf)). Default :data:`DEFAULT_OMEGA_PRIOR`, HalfNormal(0.5).
    lkj_eta : float
        LKJ shape of the multivariate between-study correlation matrix (> 0), also the Beta(eta,
        eta) shape of the compound-symmetry correlation. Default :data:`DEFAULT_LKJ_ETA`.
    rho_within : PriorSpec
        Prior of the multivariate model's within-study correlation (inside (0, 1)). Default
        :data:`DEFAULT_RHO_WITHIN_PRIOR`, Beta(2, 2).
    """

    mu: PriorSpec = DEFAULT_MU_PRIOR
    tau: PriorSpec = DEFAULT_TAU_PRIOR
    slope: PriorSpec = DEFAULT_SLOPE_PRIOR
    omega: PriorSpec = DEFAULT_OMEGA_PRIOR
    lkj_eta: float = DEFAULT_LKJ_ETA
    rho_within: PriorSpec = DEFAULT_RHO_WITHIN_PRIOR

    def __post_init__(self) -> None:
        if self.mu.family != "normal":
            raise ValueError(f"the prior of mu must be normal:M:S, got {self.mu}")
        if self.slope.family != "normal":
            raise ValueError(f"the prior of the slope must be normal:M:S, got {self.slope}")
        self.tau.require_positive("tau")
        self.omega.require_positive("omega")
        if not (math.isfinite(self.lkj_eta) and self.lkj_eta > 0):
            raise ValueError(f"LKJ eta must be a finite number > 0, got {self.lkj_eta}")
        _check_correlation_prior(self.rho_within)

    def to_dict(self) -> dict[str, str]:
        """Prior strings of the random-effects model by parameter name (``mu``, ``tau``)."""
        return {"mu": str(self.mu), "tau": str(self.tau)}

    def multilevel_dict(self) -> dict[str, str]:
        """Prior strings of the multilevel models (``mu``, ``tau``, ``omega``)."""
        return {**self.to_dict(), "omega": str(self.omega)}

    def small_study_dict(self) -> dict[str, str]:
        """Prior strings of the PET/PEESE single regressions."""
        return {"beta0": str(self.mu), "beta1": str(self.slope), "tau": str(self.tau)}

    def multivariate_dict(self) -> dict[str, str]:
        """Prior strings of the multivariate model (``R``: the unstructured LKJ form; ``rho_within`` if estimated)."""
        return {
            "mu": str(self.mu),
            "tau": str(self.tau),
            "R": f"lkj:{self.lkj_eta:g}",
            "rho_within": str(self.rho_within),
        }


#: Size of a between-study difference on each measure's scale relative to SMD (see :func:`measure_scale`).
_MEASURE_SCALES: dict[str, float] = {"ROM": 0.5, "NMD": 50.0}


def measure_scale(measure: str) -> float:
    """How much larger a between-study difference is on ``measure``'s scale than on the SMD scale.

    Used for the priors of between-study differences whose defaults were set on the SMD scale
    (the meta-regression slopes): 1 for SMD (and measures without their own defaults), 0.5 for
    ROM and 50 for NMD, the ratio of the default tau priors of :func:`default_priors`.
    """
    return _MEASURE_SCALES.get(measure, 1.0)


#: Default priors of mu and tau per effect measure other than SMD (see :func:`default_priors`).
_MEASURE_PRIORS: dict[str, tuple[str, str]] = {
    "ROM": ("normal:0:1", "halfnormal:0.5"),
    "NMD": ("normal:0:100", "halfnormal:50"),
}


def default_priors(measure: str) -> PriorSet:
    """Default priors on the scale of an effect measure (``dataset.toml`` ``effect_measure``).

    ``mu`` and ``tau`` live on the scale of ``yi``, so their weakly informative defaults depend
    on the measure. The PET/PEESE slope prior N(0, 5²) is scaled by :func:`measure_scale` (ROM
    N(0, 2.5²), NMD N(0, 250²)): the small-study regressions of arm-level data are on
    sqrt(1/ñ) and 1/ñ, whose slopes are in units of ``yi``; so is the between-comparison SD prior
    HalfNormal(0.5) (ROM HalfNormal(0.25), NMD HalfNormal(25)). The LKJ shape is unit-free and
    keeps the :class:`PriorSet` default.

    * ``"SMD"`` (Hedges' g) and any measure not listed below (e.g. effect-level log risk
      ratios): :class:`PriorSet` unchanged, mu ~ N(0, 3²), tau ~ HalfNormal(1)
      (:data:`DEFAULT_MU_PRIOR`, :data:`DEFAULT_TAU_PRIOR`).
    * ``"ROM"`` (log ratio of means): mu ~ N(0, 1²), tau ~ HalfNormal(0.5). Preclinical
      treatment effects on a ratio scale rarely exceed a factor of e^1.5 ≈ 4.5 either way
      (|log ratio| > 1.5); N(0, 1²) keeps 87% of its mass within ±1.5 and 95% within ±1.96 (a
      factor 7.1), centred on no effect. A between-study SD of 0.1-0.5 (studies' ratios spread by
      10-65%) is the plausible range; HalfNormal(0.5) has median 0.34 and 95th percentile 0.98,
      and gives tau > 1.5 (a 4.5-fold spread) prior probability 0.3%, as HalfNormal(1) does for
      tau > 3 on the SMD scale.
    * ``"NMD"`` (normalised mean difference, percent of the model-induced deficit restored):
      mu ~ N(0, 100²), tau ~ HalfNormal(50). 100% is a complete return to the sham level, and
      effects beyond ±200% (overshooting the sham by a whole deficit) are implausible:
      N(0, 100²) puts 68% of its mass within ±100% and 95% within ±196%. A between-study SD of
      20-50 percentage points (studies of one intervention ranging from little to most of the
      deficit restored) is the plausible range; HalfNormal(50) has median 34 and 95th
      percentile 98, and gives tau > 150 prior probability 0.3%. These are the SMD defaults
      scaled by 100/3 (mu) and 50 (tau): a deficit of about 2-3 control SDs, common in animal
      models, turns an SMD of 1 into an NMD of 33-50%.

    Parameters
    ----------
    measure : str
        Effect measure of the data (``"SMD"``, ``"ROM"``, ``"NMD"``, ...).

    Returns
    -------
    PriorSet
        The measure's defaults; for SMD exactly ``PriorSet()``.
    """
    if measure not in _MEASURE_PRIORS:
        return PriorSet()
    mu, tau = _MEASURE_PRIORS[measure]
    slope_mean, slope_sd = DEFAULT_SLOPE_PRIOR.params
    scale = measure_scale(measure)
    slope = PriorSpec("normal", (slope_mean, slope_sd * scale))
    omega = PriorSpec("halfnormal", (DEFAULT_OMEGA_PRIOR.params[0] * scale,))
    return PriorSet(mu=PriorSpec.parse(mu), tau=PriorSpec.parse(tau), slope=slope, omega=omega)
