r"""Calibration of the quadrature selection models by the probability integral transform (PIT).

**Principle** (Cook, Gelman & Rubin 2006, J Comput Graph Stat 15:675; Talts et al. 2018,
arXiv:1804.06788, whose rank statistic is the Monte Carlo version of the same check). Let a
model have prior :math:`p(\theta)` and likelihood :math:`p(y \mid \theta)`, and let
:math:`F(\cdot \mid y)` be the posterior CDF of a scalar :math:`q(\theta)`. Draw
:math:`\tilde\theta \sim p(\theta)` and :math:`\tilde y \sim p(y \mid \tilde\theta)`. The pair
then also has the factorisation :math:`p(\tilde y)\, p(\tilde\theta \mid \tilde y)`, so given
:math:`\tilde y` the value :math:`q(\tilde\theta)` is a draw from its posterior and

.. math::

    u = F\big(q(\tilde\theta) \mid \tilde y\big) \sim \mathcal U(0, 1)

for every :math:`\tilde y` (the PIT of a continuous distribution), hence marginally, whatever
the prior, the design and the quantity. A posterior computed wrongly (wrong likelihood, prior,
coordinates, quadrature, or a simulator that does not match the model) gives non-uniform
:math:`u`: a posterior too narrow piles :math:`u` near 0 and 1, too wide in the middle, biased on
one side. Unlike SBC of NUTS (:mod:`analysis.studies.sbc`) no draws are needed: the
quadrature gives :math:`F` itself.

**Model** (:class:`models.bias_models.BiasModel` with ``bias="selection"``; :mod:`models.selection`).
:math:`k` published studies with fixed sampling variances :math:`v_i`; cut-points
:math:`a_1 < \dots < a_{J-1}` of the one-sided p-value and the thresholds of the normal test
:math:`c_{ij} = \sqrt{v_i}\, z_{1 - a_j}` (:func:`models.selection.normal_thresholds`; interval
:math:`j(y)` = the number of thresholds above :math:`y`, 0 the most significant). Priors
:math:`\mu \sim \mathcal N(0, 3^2)`, :math:`\tau \sim \text{HalfNormal}(1)` (the defaults
:data:`models.priors.DEFAULT_MU_PRIOR`, :data:`~models.priors.DEFAULT_TAU_PRIOR`) and the
cumulative Dirichlet prior of the weights, :math:`e = (1 - \omega_2, \omega_2 - \omega_3, \dots,
\omega_J) \sim \text{Dirichlet}(1, \dots, 1)`, :math:`\omega_1 = 1 \ge \omega_2 \ge \dots`.

**Simulation** (:func:`draw_parameters`, :func:`simulate_selected_effects`): :math:`\tilde\mu`,
:math:`\tilde\tau` by the prior quantile functions at uniform draws, :math:`\tilde e` from the
Dirichlet, :math:`\tilde\omega_j = \sum_{l \ge j} \tilde e_l`. Then for every study the
generative story of publication, by rejection: candidates :math:`\theta \sim \mathcal N(\mu,
\tau^2)`, :math:`y \sim \mathcal N(\theta, v_i)` are drawn until one is published, each with
probability :math:`\omega_{j(y)}` (possible as such: :math:`\omega_1 = 1` is the largest weight).
An accepted :math:`y` has density :math:`\propto \mathcal N(y; \mu, v_i + \tau^2)\,
\omega_{j(y)}`, i.e. :math:`\mathcal N(y; \mu, \sigma_i^2)\, \omega_{j(y)} / \sum_j \omega_j
P_{ij}`, the model's likelihood; the simulator never evaluates that formula, so the check is
independent of :func:`models.selection.selection_log_lik`.

**Fit and PIT** (:func:`fit_selection_model`, :func:`posterior_pits`): the exact posterior by
adaptive tensor Gauss-Legendre quadrature (:func:`models.exact.cube.integrate`, the production
node counts) in the coordinates of :meth:`models.bias_models.BiasModel.axes`. PIT of ``mu`` and
``tau``: the marginal CDF of :class:`analysis.results.bias_averaged.ModelFit` (barycentric
interpolation of the marginal density through the nodes, integrated on a fine grid; recomputed
by :func:`marginal_cdf`) linearly interpolated at the truth. PIT of ``omega2``: the posterior
CDF of :math:`\omega_2` as a weighted distribution over the tensor grid (node masses of
:meth:`~models.exact.cube.CubeIntegral.mass`, values of
:meth:`~models.bias_models.BiasModel.parameters`; :func:`weighted_cdf`): the mass of each
distinct value placed at the mid-point of its step of the cumulative sum, linearly interpolated
between (as the production quantiles of the weights in :mod:`analysis.results.bias_averaged`),
with CDF 0 at 0 and 1 at 1. Since :math:`\omega_2 = 1 - v_1` (the first stick-breaking
fraction), the same quantity is also recorded from the spectrally interpolated marginal CDF of
the ``v1`` axis, :math:`1 - F_{v_1}(1 - \tilde\omega_2)` (``pit_omega2_axis``): a check of the
grid's discretisation, tested for uniformity too but outside the verdict.

**Tests.** Per cut-point set and quantity: the Kolmogorov-Smirnov test of the PITs against
:math:`\mathcal U(0, 1)` and the chi-square test of their histogram on :data:`N_BINS` = 20
equal bins (19 d.o.f.; 25 expected per bin at 500 replications). Multiplicity: Bonferroni over
every test of the run (two cut-point sets x three quantities x two tests = 12) at family level
:data:`FAMILY_ALPHA` = 0.01, so a quantity fails if either p-value is below 0.01 / 12 = 8.3e-4.
Also reported, not part of the verdict (uniformity implies it): the coverage of the equal-tailed
central 50% and 95% posterior intervals, i.e. the share of :math:`u` in :math:`((1-L)/2,
(1+L)/2)`, with its binomial Monte Carlo SE :math:`\sqrt{L(1-L)/n}` and an exact binomial test.

**Design** (:func:`flagship_vi`, fixed over all replications): the sampling variances of the 10
BV/TV study effects of the flagship simulated dataset ``data/bmsc_ev_osteoporosis``, one selection
model per default cut-point set (:data:`models.selection.CUTPOINT_SETS`: (0.025, 0.05) and
(0.05, 0.5)). Not checked here: the two-sample t-test thresholds production uses when group sizes
are known (the normal test is used), model averaging, and whether any selection model describes
real publication.

A replication whose simulation or fit raises is kept as a row with empty PITs and its error,
and counted; the tests use the others. Every replication has its own seed (from the study seed,
the cut-points and the replication number), so results do not depend on ``--jobs``.

Run ``python -m analysis.studies.selection_calibration [--reps N] [--seed S] [--jobs J]
[--out-dir D]`` (default 500 replications per cut-point set); writes
``selection_calibration.json`` (settings, design, per cut-point set and quantity the tests,
coverages and verdict; wall time) and ``selection_calibration.csv`` (one row per replication).
Runtime: ~0.4 s per replication (one quadrature of four axes), ~7 minutes for the default 2 x 500
replications with ``--jobs 1`` on the shared 2-core machine. All data are SIMULATED.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.config import DEFAULT_DATASET, REPORTS_DIR
from analysis.fitting.bias_averaged import integrate_model
from analysis.results.bias_averaged import marginal_values
from analysis.studies.parallel import ClientLike, map_tasks
from models.bias_models import BiasData, BiasModel, EnsemblePriors
from models.exact.cube import CubeIntegral
from models.priors import DEFAULT_MU_PRIOR, DEFAULT_TAU_PRIOR
from models.selection import CUTPOINT_SETS, interval_index, normal_thresholds, omega_from_increments

__all__ = [
    "COVERAGE_LEVELS",
    "DEFAULT_REPS",
    "FAMILY_ALPHA",
    "N_BINS",
    "PIT_COLUMNS",
    "QUANTITIES",
    "CalibrationTask",
    "bonferroni_threshold",
    "cutpoint_label",
    "default_priors",
    "draw_parameters",
    "fit_selection_model",
    "flagship_vi",
    "interval_coverage",
    "main",
    "make_tasks",
    "marginal_cdf",
    "posterior_pits",
    "run_calibration",
    "run_replication",
    "simulate_selected_effects",
    "summarise",
    "uniformity_tests",
    "weighted_cdf",
]

#: Replications per cut-point set of ``main``.
DEFAULT_REPS = 500
#: Quantities whose PIT is tested.
QUANTITIES: tuple[str, ...] = ("mu", "tau", "omega2")
#: Equal bins of the chi-square test on [0, 1].
N_BINS = 20
#: Family-wise level of the Bonferroni correction over every test of a run.
FAMILY_ALPHA = 0.01
#: Levels of the central posterior intervals whose coverage is reported.
COVERAGE_LEVELS: tuple[float, ...] = (0.5, 0.95)
#: Outcome whose study effects make the design.
DESIGN_OUTCOME = "BV_TV"
#: Candidates of the first round of the rejection sampler (multiplied by 4 each further round, at
#: most ``_MAX_BATCH``), and the most it draws for one study before giving up.
_BATCH, _MAX_BATCH, _MAX_PROPOSALS = 1_000, 1_000_000, 50_000_000
#: Rounding tolerated above a weight of 1.
_ROUNDING = 1e-12
#: PIT columns of a replication's row.
PIT_COLUMNS: tuple[str, ...] = (*(f"pit_{q}" for q in QUANTITIES), "pit_omega2_axis")
#: Tests per quantity (Kolmogorov-Smirnov, chi-square).
_TESTS_PER_QUANTITY = 2


@dataclass(frozen=True, eq=False)
class CalibrationTask:
    """One replication: cut-points, replication number, its own seed, the design's variances and the priors."""

    cutpoints: tuple[float, ...]
    rep: int
    seed: int
    vi: np.ndarray
    priors: EnsemblePriors


def default_priors() -> EnsemblePriors:
    """The production priors of the selection models: mu ~ N(0, 3^2), tau ~ HalfNormal(1), Dirichlet(1, ..., 1)."""
    return EnsemblePriors(mu=DEFAULT_MU_PRIOR, tau=DEFAULT_TAU_PRIOR)


def flagship_vi(path: Path = DEFAULT_DATASET) -> np.ndarray:
    """Sampling variances of the BV/TV study effects of the flagship dataset (the design).

    Parameters
    ----------
    path : pathlib.Path
        Dataset folder (default ``data/bmsc_ev_osteoporosis``).

    Returns
    -------
    numpy.ndarray
        ``vi`` of :func:`analysis.dataset.effects.study_effects` for ``BV_TV``, in study order.
    """
    from analysis.dataset.effects import compute_effects, study_effects
    from analysis.dataset.load import load_dataset

    table = compute_effects(load_dataset(path))
    return study_effects(table, DESIGN_OUTCOME)["vi"].to_numpy(dtype=float)


# ---------------------------------------------------------------- simulation


def draw_parameters(priors: EnsemblePriors, n_intervals: int, rng: np.random.Generator) -> dict[str, float]:
    """One draw of ``mu``, ``tau`` and the weights from the prior of a selection model.

    Parameters
    ----------
    priors : EnsemblePriors
        ``mu``, ``tau`` priors and the Dirichlet concentration ``alpha``.
    n_intervals : int
        Number of p-value intervals ``J`` (cut-points + 1).
    rng : numpy.random.Generator

    Returns
    -------
    dict
        ``mu``, ``tau`` (prior quantile functions at uniform draws), the Dirichlet increments
        ``e1..eJ`` and the weights ``omega1..omegaJ`` (``omega1 = 1``).
    """
    mu = float(priors.mu.ppf(rng.uniform()))
    tau = float(priors.tau.ppf(rng.uniform()))
    e = rng.dirichlet(np.full(n_intervals, priors.alpha))
    omega = omega_from_increments(list(e))
    out = {"mu": mu, "tau": tau}
    out |= {f"e{j + 1}": float(x) for j, x in enumerate(e)}
    return out | {f"omega{j + 1}": float(w) for j, w in enumerate(omega)}


def simulate_selected_effects(
    mu: float,
    tau: float,
    omega: Sequence[float] | np.ndarray,
    vi: np.ndarray,
    thresholds: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One published effect per study under step-function selection, by rejection.

    Parameters
    ----------
    mu, tau : float
        Mean and SD of the true effects before selection.
    omega : sequence of float
        Publication probability of each p-value interval (first = most significant), in [0, 1].
    vi : numpy.ndarray
        Sampling variance of each study (length ``k``).
    thresholds : numpy.ndarray
        ``(k, J-1)`` thresholds on the ``y`` scale (:func:`models.selection.normal_thresholds`).
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        For each study the first candidate ``theta ~ N(mu, tau^2)``, ``y ~ N(theta, v_i)``
        accepted with probability ``omega[j(y)]``, ``j(y)`` from :func:`models.selection.interval_index`.

    Raises
    ------
    ValueError
        If the weights are not in [0, 1], all zero, or do not match the thresholds.
    RuntimeError
        If a study has no accepted candidate among ``_MAX_PROPOSALS``.
    """
    w = np.asarray(omega, dtype=float)
    v = np.asarray(vi, dtype=float)
    c = np.asarray(thresholds, dtype=float)
    if w.ndim != 1 or c.shape != (v.size, w.size - 1):
        raise ValueError(f"need {w.size - 1} thresholds for each of {v.size} studies, got shape {c.shape}")
    if np.any(w < 0) or np.any(w > 1.0 + _ROUNDING) or not np.any(w > 0):
        raise ValueError(f"weights must lie in [0, 1] and not all be 0, got {w.tolist()}")
    w = np.minimum(w, 1.0)  # omega1 = sum of the increments may exceed 1 by rounding
    return np.array([_first_accepted(mu, tau, v[i], w, c[i], rng) for i in range(v.size)])


def _first_accepted(
    mu: float, tau: float, vi: float, omega: np.ndarray, thresholds: np.ndarray, rng: np.random.Generator
) -> float:
    drawn, batch = 0, _BATCH
    while drawn < _MAX_PROPOSALS:
        theta = rng.normal(mu, tau, size=batch)
        y = rng.normal(theta, np.sqrt(vi))
        which = interval_index(y, np.broadcast_to(thresholds, (batch, thresholds.size)))
        kept = rng.uniform(size=batch) < omega[which]
        if kept.any():
            return float(y[np.argmax(kept)])
        drawn += batch
        batch = min(4 * batch, _MAX_BATCH)
    raise RuntimeError(f"no study published in {drawn} candidates (mu={mu}, tau={tau}, omega={omega.tolist()})")


# ---------------------------------------------------------------- fit and PIT


def fit_selection_model(
    yi: np.ndarray, vi: np.ndarray, thresholds: np.ndarray, cutpoints: tuple[float, ...], priors: EnsemblePriors
) -> tuple[BiasModel, CubeIntegral]:
    """The exact posterior of the selection model ``mu+tau+selection(cutpoints)`` by quadrature.

    Parameters
    ----------
    yi, vi : numpy.ndarray
        Published effects and their sampling variances.
    thresholds : numpy.ndarray
        ``(k, J-1)`` thresholds of the studies' tests.
    cutpoints : tuple of float
        Cut-points of the model.
    priors : EnsemblePriors
        Priors of the fit.

    Returns
    -------
    tuple
        The :class:`~models.bias_models.BiasModel` and its :class:`~models.exact.cube.CubeIntegral`.
    """
    y, v = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    data = BiasData(y, v, np.sqrt(v), {tuple(cutpoints): np.asarray(thresholds, dtype=float)}, "sei", "z")
    model = BiasModel(True, True, "selection", tuple(cutpoints), 1.0, priors)
    return model, integrate_model(model, data, tabulate=("mu", "log_tau", "v1"))


def weighted_cdf(values: np.ndarray, mass: np.ndarray, x: float, support: tuple[float, float] = (0.0, 1.0)) -> float:
    """CDF at ``x`` of a quantity given by its values and posterior masses on a grid.

    The mass of each distinct value sits at the mid-point of the cumulative sum; the CDF is
    linear between those points and from ``(support[0], 0)`` and to ``(support[1], 1)``.

    Parameters
    ----------
    values, mass : numpy.ndarray
        Values of the quantity and masses (summing to 1) on the same grid (broadcastable).
    x : float
        Where to evaluate the CDF.
    support : tuple of float
        Bounds of the quantity's support.

    Returns
    -------
    float
    """
    m_grid = np.asarray(mass, dtype=float)
    v_grid = np.asarray(values, dtype=float)
    v_grid = v_grid.reshape((1,) * (m_grid.ndim - v_grid.ndim) + v_grid.shape)
    # sum the mass over the axes the values do not vary along, then over equal values
    constant = tuple(d for d in range(m_grid.ndim) if v_grid.shape[d] == 1 and m_grid.shape[d] > 1)
    m_grid = m_grid.sum(axis=constant, keepdims=True)
    v_grid = np.broadcast_to(v_grid, m_grid.shape)
    v, inverse = np.unique(v_grid.ravel(), return_inverse=True)
    m = np.bincount(inverse, weights=m_grid.ravel(), minlength=v.size)
    mid = np.cumsum(m / m.sum()) - m / m.sum() / 2.0
    inside = (v > support[0]) & (v < support[1])
    xp = np.concatenate([[support[0]], v[inside], [support[1]]])
    fp = np.concatenate([[0.0], mid[inside], [1.0]])
    return float(np.interp(x, xp, fp))


def marginal_cdf(model: BiasModel, integral: CubeIntegral, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Marginal posterior CDF of ``mu`` or ``tau``: ``(values, cdf)``, as the production summaries use it
    (:func:`analysis.results.bias_averaged.marginal_values`)."""
    return marginal_values(model, integral, name)


def posterior_pits(model: BiasModel, integral: CubeIntegral, truth: dict[str, float]) -> dict[str, float]:
    """PITs of ``mu``, ``tau`` and ``omega2`` at the true values, and posterior summaries.

    Parameters
    ----------
    model : BiasModel
        A selection model with free ``mu`` and ``tau``.
    integral : CubeIntegral
        Its quadrature (:func:`fit_selection_model`).
    truth : dict
        True ``mu``, ``tau``, ``omega2``.

    Returns
    -------
    dict
        ``pit_mu``, ``pit_tau``, ``pit_omega2`` (see the module docstring), ``pit_omega2_axis``
        (the same from the marginal CDF of ``v1``), posterior means ``post_mean_*`` and SDs
        ``post_sd_*`` of the three quantities, ``log_evidence`` and ``quadrature_error``.
    """
    out = {}
    for name in ("mu", "tau"):
        values, cdf = marginal_cdf(model, integral, name)
        out[f"pit_{name}"] = float(np.interp(truth[name], values, cdf, left=0.0, right=1.0))
    par = model.parameters(integral.nodes)
    mass = integral.mass()
    out["pit_omega2"] = weighted_cdf(par["omega2"], mass, truth["omega2"])
    c, cdf = integral.axis_cdf(model.axes().index("v1"))
    out["pit_omega2_axis"] = float(1.0 - np.interp(1.0 - truth["omega2"], c, cdf, left=0.0, right=1.0))
    for name in QUANTITIES:
        mean = float(np.sum(mass * par[name]))
        out[f"post_mean_{name}"] = mean
        out[f"post_sd_{name}"] = float(np.sqrt(max(np.sum(mass * (par[name] - mean) ** 2), 0.0)))
    return out | {"log_evidence": integral.log_evidence, "quadrature_error": integral.error}


# ---------------------------------------------------------------- replications


def cutpoint_label(cutpoints: Sequence[float]) -> str:
    """``"0.025,0.05"``: the cut-point set as written in the outputs."""
    return ",".join(f"{c:g}" for c in cutpoints)


def run_replication(task: CalibrationTask) -> dict:
    """Simulate, fit and compute the PITs of one replication (one row of ``selection_calibration.csv``).

    Returns
    -------
    dict
        ``cutpoints, rep, seed``, the truth (``mu_true, tau_true, omega2_true, ...``), the number
        of published studies per p-value interval ``n_interval1..J``, the columns of
        :func:`posterior_pits`, ``seconds`` and ``error`` (empty; a replication that raises
        returns its error and no PITs).
    """
    started = time.perf_counter()
    row: dict = {"cutpoints": cutpoint_label(task.cutpoints), "rep": task.rep, "seed": task.seed}
    n_intervals = len(task.cutpoints) + 1
    try:
        rng = np.random.default_rng(task.seed)
        thresholds = normal_thresholds(np.sqrt(task.vi), task.cutpoints)
        truth = draw_parameters(task.priors, n_intervals, rng)
        row |= {f"{k}_true": v for k, v in truth.items() if not k.startswith("e") and k != "omega1"}
        omega = [truth[f"omega{j + 1}"] for j in range(n_intervals)]
        yi = simulate_selected_effects(truth["mu"], truth["tau"], omega, task.vi, thresholds, rng)
        counts = np.bincount(interval_index(yi, thresholds), minlength=n_intervals)
        row |= {f"n_interval{j + 1}": int(n) for j, n in enumerate(counts)}
        model, integral = fit_selection_model(yi, task.vi, thresholds, task.cutpoints, task.priors)
        row |= posterior_pits(model, integral, truth)
        row["error"] = ""
    except Exception as error:  # noqa: BLE001 - every failure is recorded and counted, never dropped silently
        row["error"] = f"{type(error).__name__}: {error}"
    row["seconds"] = time.perf_counter() - started
    return row


def make_tasks(
    cutpoints: tuple[float, ...], reps: int, seed: int, vi: np.ndarray, priors: EnsemblePriors
) -> list[CalibrationTask]:
    """Replications ``0..reps-1`` of one cut-point set, each seeded from ``(seed, cut-points, rep)``."""
    key = [round(c * 1_000_000) for c in cutpoints]
    seeds = [int(np.random.SeedSequence([seed, *key, rep]).generate_state(1)[0]) for rep in range(reps)]
    return [
        CalibrationTask(tuple(cutpoints), rep, s, np.asarray(vi, dtype=float), priors) for rep, s in enumerate(seeds)
    ]


def run_calibration(
    cutpoint_sets: Sequence[tuple[float, ...]] = CUTPOINT_SETS,
    *,
    reps: int,
    seed: int,
    vi: np.ndarray | None = None,
    priors: EnsemblePriors | None = None,
    executor: Executor | ClientLike | None = None,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run ``reps`` replications of each cut-point set and return the rows of ``selection_calibration.csv``.

    Parameters
    ----------
    cutpoint_sets : sequence of tuple of float
        One selection model per set (default both defaults).
    reps, seed : int
        Replications per set and the seed every replication's seed is derived from.
    vi : numpy.ndarray, optional
        Sampling variances of the design (default :func:`flagship_vi`).
    priors : EnsemblePriors, optional
        Priors of simulation and fit (default :func:`default_priors`).
    executor : concurrent.futures.Executor or dask Client, optional
        Passed to :func:`analysis.studies.parallel.map_tasks`.
    jobs : int
        Worker processes when no executor is given (1: in this process).
    progress : callable, optional
        ``progress(done, total)`` after every replication.

    Returns
    -------
    pandas.DataFrame
        One row per replication (:func:`run_replication`).
    """
    vi = flagship_vi() if vi is None else np.asarray(vi, dtype=float)
    priors = priors or default_priors()
    tasks = [t for cuts in cutpoint_sets for t in make_tasks(tuple(cuts), reps, seed, vi, priors)]
    return pd.DataFrame(map_tasks(run_replication, tasks, executor=executor, jobs=jobs, progress=progress))


# ---------------------------------------------------------------- tests and summaries


def bonferroni_threshold(n_tests: int, family_alpha: float = FAMILY_ALPHA) -> float:
    """Per-test level of a Bonferroni correction: ``family_alpha / n_tests``."""
    if n_tests < 1 or not 0 < family_alpha < 1:
        raise ValueError(f"need n_tests >= 1 and 0 < family_alpha < 1, got {n_tests}, {family_alpha}")
    return family_alpha / n_tests


def uniformity_tests(pit: Sequence[float] | np.ndarray, n_bins: int = N_BINS) -> dict:
    """Kolmogorov-Smirnov and chi-square tests of PIT values against Uniform(0, 1).

    Parameters
    ----------
    pit : array_like
        PIT values in [0, 1] (NaN are left out).
    n_bins : int
        Equal bins of the chi-square test (``n_bins - 1`` d.o.f.).

    Returns
    -------
    dict
        ``n``, ``counts`` per bin, ``expected_per_bin``, ``ks_statistic``, ``ks_p_value``,
        ``chi2``, ``df``, ``chi2_p_value`` (NaN without values).
    """
    u = np.asarray(pit, dtype=float)
    u = u[np.isfinite(u)]
    counts = np.histogram(u, bins=n_bins, range=(0.0, 1.0))[0]
    out = {"n": int(u.size), "counts": counts.tolist(), "expected_per_bin": u.size / n_bins, "df": n_bins - 1}
    if u.size == 0:
        return out | dict.fromkeys(("ks_statistic", "ks_p_value", "chi2", "chi2_p_value"), float("nan"))
    ks = stats.kstest(u, "uniform")
    chi2 = stats.chisquare(counts)
    return out | {
        "ks_statistic": float(ks.statistic),
        "ks_p_value": float(ks.pvalue),
        "chi2": float(chi2.statistic),
        "chi2_p_value": float(chi2.pvalue),
    }


def interval_coverage(pit: Sequence[float] | np.ndarray, level: float) -> dict:
    """Coverage of the equal-tailed central posterior interval of ``level``, from the PITs.

    The truth lies inside the interval iff ``(1 - level)/2 < u < (1 + level)/2``.

    Returns
    -------
    dict
        ``level``, ``n``, ``coverage``, its Monte Carlo SE under correct calibration
        ``sqrt(level (1 - level) / n)`` and the p-value of an exact two-sided binomial test.
    """
    u = np.asarray(pit, dtype=float)
    u = u[np.isfinite(u)]
    if u.size == 0:
        return {"level": level, "n": 0, "coverage": float("nan"), "mcse": float("nan"), "binom_p_value": float("nan")}
    inside = int(np.sum((u > (1.0 - level) / 2.0) & (u < (1.0 + level) / 2.0)))
    return {
        "level": level,
        "n": int(u.size),
        "coverage": inside / u.size,
        "mcse": float(np.sqrt(level * (1.0 - level) / u.size)),
        "binom_p_value": float(stats.binomtest(inside, u.size, level).pvalue),
    }


def _quantity_summary(pit: pd.Series, threshold: float) -> dict:
    tests = uniformity_tests(pit.to_numpy(dtype=float))
    coverage = {
        f"{round(100 * level)}%": interval_coverage(pit.to_numpy(dtype=float), level) for level in COVERAGE_LEVELS
    }
    passed = None
    if tests["n"]:
        passed = bool(tests["ks_p_value"] >= threshold and tests["chi2_p_value"] >= threshold)
    return {"uniformity": tests, "coverage": coverage, "pass": passed}


def _set_summary(frame: pd.DataFrame, threshold: float) -> dict:
    ok = frame[frame["error"] == ""]
    column = {c: ok[c] if c in ok else pd.Series(dtype=float) for c in (*PIT_COLUMNS, "quadrature_error")}
    quantities = {q: _quantity_summary(column[f"pit_{q}"], threshold) for q in QUANTITIES}
    seconds = frame["seconds"].astype(float)
    return {
        "n_replications": int(len(frame)),
        "n_errors": int(len(frame) - len(ok)),
        "errors": sorted(set(frame.loc[frame["error"] != "", "error"])),
        "all_pass": all(s["pass"] for s in quantities.values()),
        "quantities": quantities,
        "check_omega2_axis": {
            "note": "PIT of omega2 from the marginal CDF of v1 (not part of the verdict)",
            "max_abs_difference_to_grid_pit": float((column["pit_omega2"] - column["pit_omega2_axis"]).abs().max()),
        }
        | _quantity_summary(column["pit_omega2_axis"], threshold),
        "quadrature_error_max": float(column["quadrature_error"].max()),
        "mean_n_interval": {
            c: float(ok[c].mean()) for c in sorted(ok.columns) if c.startswith("n_interval") and ok[c].notna().any()
        },
        "seconds_per_replication": {"mean": float(seconds.mean()), "max": float(seconds.max())},
    }


def summarise(rows: pd.DataFrame, *, threshold: float) -> dict[str, dict]:
    """Per cut-point set: counts, errors, and per quantity the uniformity tests, coverages and verdict.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of :func:`run_calibration`.
    threshold : float
        Per-test level (:func:`bonferroni_threshold`); a quantity passes if both p-values reach it.

    Returns
    -------
    dict
        Cut-point label -> summary (see ``selection_calibration.json``).
    """
    return {label: _set_summary(part, threshold) for label, part in rows.groupby("cutpoints", sort=False)}


# ---------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.studies.selection_calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="replications per cut-point set")
    parser.add_argument("--seed", type=int, default=1, help="seed of the study")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (1: in this process)")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of selection_calibration.json/.csv")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study, write ``selection_calibration.json`` and ``.csv``; progress goes to stderr."""
    from analysis.report.files import write_csv, write_json

    args = _parser().parse_args(argv)
    if args.reps < 1:
        raise SystemExit("--reps must be >= 1")
    started = time.perf_counter()
    vi = flagship_vi()
    priors = default_priors()
    n_tests = len(CUTPOINT_SETS) * len(QUANTITIES) * _TESTS_PER_QUANTITY
    threshold = bonferroni_threshold(n_tests)
    step = max(1, len(CUTPOINT_SETS) * args.reps // 20)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            print(f"[selection_calibration] {done}/{total}, {time.perf_counter() - started:.0f} s", file=sys.stderr)

    rows = run_calibration(
        CUTPOINT_SETS, reps=args.reps, seed=args.seed, vi=vi, priors=priors, jobs=args.jobs, progress=progress
    )
    results = summarise(rows, threshold=threshold)
    report = {
        "study": "PIT calibration of the quadrature selection models (Cook, Gelman & Rubin 2006), SIMULATED data",
        "settings": {
            "reps_per_cutpoint_set": args.reps,
            "seed": args.seed,
            "jobs": args.jobs,
            "cutpoint_sets": [list(c) for c in CUTPOINT_SETS],
            "priors": {
                "mu": str(priors.mu),
                "tau": str(priors.tau),
                "weights": f"cumulative Dirichlet({priors.alpha:g})",
            },
            "quantities": list(QUANTITIES),
            "tests": f"Kolmogorov-Smirnov against U(0,1); chi-square on {N_BINS} equal bins ({N_BINS - 1} d.o.f.)",
            "multiplicity": (
                f"Bonferroni over all {n_tests} tests ({len(CUTPOINT_SETS)} cut-point sets x {len(QUANTITIES)} "
                f"quantities x {_TESTS_PER_QUANTITY} tests) at family level {FAMILY_ALPHA}: a quantity fails "
                f"if either p < {FAMILY_ALPHA}/{n_tests}"
            ),
            "family_alpha": FAMILY_ALPHA,
            "n_tests": n_tests,
            "threshold": threshold,
            "coverage_levels": list(COVERAGE_LEVELS),
        },
        "design": {
            "dataset": DEFAULT_DATASET.name,
            "outcome": DESIGN_OUTCOME,
            "k": int(vi.size),
            "vi": vi.tolist(),
            "test": "normal (thresholds sqrt(vi) z_(1-a))",
        },
        "results": results,
        "all_pass": all(r["all_pass"] for r in results.values()),
        "wall_seconds": time.perf_counter() - started,
    }
    write_csv(args.out_dir / "selection_calibration.csv", rows)
    write_json(args.out_dir / "selection_calibration.json", report)
    for label, r in results.items():
        for q, s in r["quantities"].items():
            u, cov = s["uniformity"], s["coverage"]
            print(
                f"{label:>10} {q:>6}: KS p={u['ks_p_value']:.3g} chi2 p={u['chi2_p_value']:.3g} "
                f"cov50={cov['50%']['coverage']:.3f} cov95={cov['95%']['coverage']:.3f} "
                f"{'pass' if s['pass'] else 'FAIL'}"
            )
    print(f"threshold {threshold:.3g}; all pass: {report['all_pass']}; {report['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
