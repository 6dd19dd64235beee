r"""False-alarm rate and power of the outcome-reporting-bias diagnostic on the flagship design.

The diagnostic (:func:`analysis.checks.reporting_bias.reporting_bias`) flags an outcome j when
the multivariate estimate of :math:`\mu_j` lies significantly below the estimate from the studies
reporting j (``z <= -1.96``). This study measures, on SIMULATED data with the flagship design, how
often it fires when missingness is ignorable (false alarms) and when non-significant results are
left unreported (power), and whether the multivariate model reduces the bias outcome-reporting
bias (ORB) causes in :math:`\mu_j` compared with the univariate model.

**Design** (fixed over all replications, :func:`flagship_design`): the 10 studies of the simulated
flagship dataset ``bmsc_ev_osteoporosis`` and the four default outcomes BV/TV, Tb.N, Tb.Sp, Tb.Th
(benefit scale: Tb.Sp sign-flipped); the within-study variances :math:`v_{ij}` of the flagship
(:func:`analysis.fitting.multivariate_data.multivariate_data_from_dataset`); a cell the flagship
does not report gets the mean of that study's reported variances (same animals).

**Truth** (:func:`true_parameters`, benefit scale, from :mod:`analysis.dataset.simulate_design`):
:math:`\mu` = (2.0, 1.6, 1.5, 1.2) = ``MU`` times ``DIRECTION``; :math:`\tau` = ``TAU_RESIDUAL``
(0.6, 0.5, 0.5, 0.45) - the *residual* between-study SDs of the flagship simulation; the flagship
dataset also has moderators, so its marginal :math:`\tau` is larger, but here there are no
moderators and :math:`\tau` is the whole heterogeneity; R = the BV/TV, Tb.N, Tb.Sp, Tb.Th block of
``R_BETWEEN_BENEFIT``; within-study correlation :math:`\rho_w` = 0.6 for every pair. Per
replication :math:`\theta_i \sim \mathrm{MVN}(\mu, \mathrm{diag}(\tau) R\, \mathrm{diag}(\tau))`
and complete data :math:`y_i \sim \mathrm{MVN}(\theta_i, S_i)`,
:math:`S_i = D_i^{1/2}((1-\rho_w) I + \rho_w J) D_i^{1/2}` (:func:`simulate_replication`).

**Conditions** (:data:`CONDITIONS`, :func:`reporting_pattern`):

``ignorable``
    the flagship's own reporting pattern (4 studies miss Tb.N, 2 of them also Tb.Sp and Tb.Th),
    fixed and unrelated to the values.
``orb``
    BV/TV always reported; any other outcome of a study is reported only if it is significant
    in the benefit direction, :math:`y_{ij} / \sqrt{v_{ij}} > 1.96`.

An outcome reported by fewer than 2 studies is dropped from that replication's fit (column
``estimable``); with fewer than 2 outcomes left the replication is recorded as not fittable.

**Fits** (the production path): the data enter a
:class:`~analysis.fitting.multivariate_data.MultivariateData` with :math:`\rho_w` estimated
under its default Beta(2, 2) prior; each of the three between-study structures (unstructured,
compound symmetry, independent) is fitted with NUTS (4 x 500 draws after 500 tuning
iterations, target_accept 0.95, retried once on a failed gate as in production) and default
priors, and PSIS-LOO over studies selects one
(:func:`analysis.fitting.multivariate_structures.compare_structures`; rows ``structure =
"selected"``). Per fit and outcome: the diagnostic (k_reported, z, flagged, posterior of the
contrast d_j, its null SD), the multivariate posterior mean of :math:`\mu_j` and the univariate
exact-engine posterior mean from the reporting studies, both against the truth.

**Compilation.** :func:`analysis.fitting.multivariate.fit_multivariate_data` builds the model with
the observed effects *and* the reporting mask (the padding of :func:`models.multivariate.pad_missing`)
baked into the graph as constants, so every replication would be a new compile (measured: 79 s
and 58 s for two successive unstructured fits, of which sampling is a few seconds).
:func:`shared_data_model` therefore takes the production builder's model and swaps these four
constants (``y``, the mask, its outer product and the padding variances) for shared variables of
the same values; the log density is unchanged (checked in the tests against the builder's model)
and one compiled model per structure and number of outcomes serves every replication and
reporting pattern in a worker (:mod:`analysis.fitting.nuts`). The rest of the production path
is called as is (``sample_with_retry``, ``diagnose``, ``_add_log_likelihood``, ``reporting_bias``,
``_univariate_exact``, ``compare_structures``).

**Summaries** (:func:`summarise`): per condition, structure and outcome with possible missing
studies (Tb.N, Tb.Sp, Tb.Th): ``n_estimable``, the flag rate among estimable fits (an outcome
that every study reported cannot be flagged and counts as not flagged) with its Monte Carlo SE
:math:`\sqrt{p(1-p)/n}`, the rate among fits where the outcome had missing studies, mean z; per
dataset the rate of at least one flagged outcome (false-alarm rate under ``ignorable``, power
under ``orb``); per outcome the mean error and RMSE of the multivariate and univariate posterior
means against the true :math:`\mu_j`, with Monte Carlo SEs; structure selection frequencies;
errors and non-converged fits. A replication whose simulation or fit raises is kept as rows with
the error, never dropped.

Run ``python -m analysis.studies.reporting_bias_power [--reps N] [--seed S] [--jobs J]
[--out-dir reports]`` (N replications per condition); writes ``reporting_bias_power.json``
(settings, summaries) and ``reporting_bias_power.csv`` (one row per replication, condition,
structure and outcome), rewritten after every chunk of replications; progress goes to stderr.
Runtime (measured with ``--jobs 1`` beside another CPU-bound job on the 2-core machine): ~3 min
for the first replication (three compiles), then ~16 s per replication (median 3-5 s per
structure fit, 3-10% of fits retried); the default 2 x 100 replications took 54 min.
All data are SIMULATED.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import xarray as xr
from pymc.model.fgraph import fgraph_from_model, model_from_fgraph
from pytensor.graph.basic import Constant

from analysis.atomic import write_bytes_atomic
from analysis.checks.reporting_bias import Z_FLAG, reporting_bias
from analysis.config import DEFAULT_DATASET, REPORTS_DIR
from analysis.dataset import simulate_design as D
from analysis.dataset.load import Outcome
from analysis.fitting.multivariate import _add_log_likelihood, _univariate_exact, gate_variables, multivariate_model
from analysis.fitting.multivariate_data import DEFAULT_OUTCOMES, DEFAULT_RHO_WITHIN, MultivariateData
from analysis.fitting.multivariate_structures import compare_structures
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import diagnose
from analysis.studies.parallel import interleave, map_tasks
from models.multivariate import STRUCTURES, pad_missing, within_covariance
from models.priors import PriorSet, default_priors

__all__ = [
    "ALWAYS_REPORTED",
    "CONDITIONS",
    "DEFAULT_REPS",
    "MIN_REPORTING",
    "RHO_WITHIN_TRUE",
    "SAMPLER",
    "ROW_COLUMNS",
    "SELECTED",
    "Z_SIGNIFICANT",
    "FlagshipDesign",
    "Replication",
    "Task",
    "Truth",
    "flagship_design",
    "make_tasks",
    "model_data",
    "reporting_pattern",
    "run_replication",
    "run_study",
    "shared_data_model",
    "simulate_replication",
    "summarise",
    "true_parameters",
]

#: Reporting conditions, in task-seed order.
CONDITIONS: tuple[str, ...] = ("ignorable", "orb")
#: Replications per condition of ``main``.
DEFAULT_REPS = 100
#: NUTS settings of every fit (retried once with target_accept 0.99 and doubled draws on a failed gate).
SAMPLER = SamplerSettings(draws=500, tune=500, chains=4, target_accept=0.95)
#: True within-study correlation of every pair of outcomes (benefit scale).
RHO_WITHIN_TRUE = 0.6
#: One-sided significance threshold of the ORB condition: reported iff y / sqrt(v) > this.
Z_SIGNIFICANT = 1.96
#: The outcome every study reports in the ORB condition.
ALWAYS_REPORTED = "BV_TV"
#: Fewest reporting studies for an outcome to enter the fit.
MIN_REPORTING = 2
#: Label of the rows of the LOO-selected structure.
SELECTED = "selected"
#: Random streams of a replication (the sampler takes the task seed itself).
_SIMULATION_STREAM = 1
#: Columns of the CSV, in order (rows of failed or not fittable replications leave some empty).
ROW_COLUMNS = [
    "condition",
    "rep",
    "seed",
    "structure",
    "outcome",
    "error",
    "fittable",
    "n_outcomes_fitted",
    "selected_structure",
    "is_selected",
    "truth",
    "estimable",
    "k_reported",
    "has_missing",
    "z",
    "flagged",
    "z_averaged",
    "flagged_averaged",
    "diff_mean",
    "diff_q025",
    "diff_q975",
    "null_sd",
    "mv_mean",
    "uv_mean",
    "mv_error",
    "uv_error",
    "converged",
    "retried",
    "r_hat_max",
    "ess_bulk_min",
    "divergences",
    "elpd_loo",
    "n_pareto_k_high",
    "seconds_fit",
    "seconds_replication",
]
#: Names of the shared variables replacing the builder's data constants.
_SHARED_NAMES = ("y_observed", "reported_mask", "reported_outer", "pad_variance")


# ---------------------------------------------------------------- design and truth


@dataclass(frozen=True, eq=False)
class FlagshipDesign:
    """Fixed inputs: studies, outcomes, complete within-study variances and the flagship's reporting pattern."""

    dataset: str
    study: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    vi: np.ndarray
    reported: np.ndarray

    @property
    def outcome_ids(self) -> list[str]:
        """Outcome ids in column order."""
        return [o.id for o in self.outcomes]


@dataclass(frozen=True, eq=False)
class Truth:
    """True benefit-scale mean effects, between-study SDs and correlation, and within-study correlation."""

    mu: np.ndarray
    tau: np.ndarray
    R: np.ndarray
    rho_within: float = RHO_WITHIN_TRUE

    @property
    def sigma(self) -> np.ndarray:
        """Between-study covariance ``diag(tau) R diag(tau)``."""
        return self.tau[:, None] * self.R * self.tau[None, :]


def flagship_design(path: Path = DEFAULT_DATASET) -> FlagshipDesign:
    """The flagship's studies, default outcomes, variances (missing cells: the study's mean) and pattern."""
    from analysis.dataset.load import load_dataset
    from analysis.fitting.multivariate_data import multivariate_data_from_dataset

    data = multivariate_data_from_dataset(load_dataset(path))
    vi = data.vi
    row_mean = np.nanmean(vi, axis=1)
    filled = np.where(np.isnan(vi), row_mean[:, None], vi)
    return FlagshipDesign(
        dataset=data.dataset, study=tuple(data.study), outcomes=tuple(data.outcomes), vi=filled, reported=data.reported
    )


def true_parameters(outcomes: Sequence[str] = DEFAULT_OUTCOMES) -> Truth:
    """The simulation truth of :mod:`analysis.dataset.simulate_design` on the benefit scale."""
    index = [D.OUTCOMES.index(o) for o in outcomes]
    R = np.asarray(D.R_BETWEEN_BENEFIT, dtype=float)[np.ix_(index, index)]
    return Truth(
        mu=np.array([D.MU[o] * D.DIRECTION[o] for o in outcomes], dtype=float),
        tau=np.array([D.TAU_RESIDUAL[o] for o in outcomes], dtype=float),
        R=R,
    )


# ---------------------------------------------------------------- simulation


@dataclass(frozen=True, eq=False)
class Replication:
    """One simulated dataset: true study effects, complete effects, reporting pattern, estimable outcomes."""

    condition: str
    theta: np.ndarray
    y: np.ndarray
    reported: np.ndarray
    estimable: np.ndarray

    @property
    def fittable(self) -> bool:
        """At least two estimable outcomes."""
        return int(self.estimable.sum()) >= 2


def reporting_pattern(condition: str, design: FlagshipDesign, y: np.ndarray) -> np.ndarray:
    """``(k, K)`` boolean: the flagship pattern (``ignorable``) or significance-driven reporting (``orb``)."""
    if condition == "ignorable":
        return design.reported.copy()
    if condition == "orb":
        reported = y / np.sqrt(design.vi) > Z_SIGNIFICANT
        reported[:, design.outcome_ids.index(ALWAYS_REPORTED)] = True
        return reported
    raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")


def simulate_replication(design: FlagshipDesign, truth: Truth, condition: str, rng: np.random.Generator) -> Replication:
    """Draw θ_i and the complete y_i, then apply the condition's reporting rule (see the module docstring)."""
    k = len(design.study)
    theta = rng.multivariate_normal(truth.mu, truth.sigma, size=k)
    S = within_covariance(design.vi, truth.rho_within)
    noise = np.einsum("kab,kb->ka", np.linalg.cholesky(S), rng.standard_normal(theta.shape))
    y = theta + noise
    reported = reporting_pattern(condition, design, y)
    return Replication(condition, theta, y, reported, reported.sum(axis=0) >= MIN_REPORTING)


def model_data(design: FlagshipDesign, rep: Replication) -> MultivariateData | None:
    """The fitted data: estimable outcomes only, NaN where unreported, rho_w estimated; None if not fittable."""
    if not rep.fittable:
        return None
    keep = np.flatnonzero(rep.estimable)
    reported = rep.reported[:, keep]
    assert reported.any(axis=1).all(), "every study reports BV_TV, so none can report no modelled outcome"
    yi = np.where(reported, rep.y[:, keep], np.nan)
    vi = np.where(reported, design.vi[:, keep], np.nan)
    return MultivariateData(
        dataset=f"{design.dataset} design, {rep.condition} reporting (SIMULATED)",
        provenance="simulated",
        measure="SMD",
        study=design.study,
        outcomes=tuple(design.outcomes[j] for j in keep),
        yi=yi,
        S=within_covariance(vi, DEFAULT_RHO_WITHIN),
        within=(
            "within-study correlation rho_w (one for every pair, benefit scale) estimated under its prior "
            f"(SIMULATED with rho_w = {RHO_WITHIN_TRUE})"
        ),
        rho_within=None,
        rho_within_estimated=True,
    )


# ---------------------------------------------------------------- model with shared data


def shared_data_model(data: MultivariateData, priors: PriorSet, structure: str) -> pm.Model:
    """The production builder's model with its data constants swapped for shared variables of the same values.

    :func:`models.multivariate.build_multivariate_model` bakes the padded effects ``y``, the
    reporting mask, its outer product and the padding variances into the graph as constants, so
    each dataset would get its own compile (:mod:`analysis.fitting.nuts` fingerprints constants).
    Here these four constants become shared variables (:data:`_SHARED_NAMES`, static shapes as
    before); the log density is the same, and models of one structure and shape share a
    fingerprint whatever the data and reporting pattern.

    Raises
    ------
    RuntimeError
        If the four constants are not found exactly once each (the builder changed).
    """
    model = multivariate_model(data, priors, structure=structure)
    reported, y, s_pad = pad_missing(data.yi, data.S)
    both = reported[:, :, None] * reported[:, None, :]
    targets = dict(zip(_SHARED_NAMES, (y, reported, both, s_pad * (1.0 - both))))
    fgraph, _ = fgraph_from_model(model)
    found: dict[str, list[Constant]] = {name: [] for name in targets}
    for var in fgraph.variables:
        if not isinstance(var, Constant):
            continue
        value = np.asarray(var.data)
        for name, target in targets.items():
            if value.shape == target.shape and np.array_equal(value, target):
                found[name].append(var)
    if any(len(v) != 1 for v in found.values()):
        counts = {name: len(v) for name, v in found.items()}
        raise RuntimeError(f"expected each data constant once in the multivariate graph, found {counts}")
    replacements = []
    for name, (const,) in found.items():
        shared = pytensor.shared(targets[name], name=name, shape=targets[name].shape)
        fgraph.add_input(shared)
        replacements.append((const, shared))
    fgraph.replace_all(replacements, import_missing=True)
    return model_from_fgraph(fgraph, mutate_fgraph=True)


# ---------------------------------------------------------------- one replication


@dataclass(frozen=True, eq=False)
class Task:
    """One replication: condition, number, own seed, design, truth, priors and sampler settings."""

    condition: str
    rep: int
    seed: int
    design: FlagshipDesign
    truth: Truth
    priors: PriorSet
    sampler: SamplerSettings = SAMPLER


@dataclass(frozen=True, eq=False)
class _StructureFit:
    """What the study keeps of one fit; ``posterior`` (with ``log_likelihood``) is what compare_structures reads."""

    posterior: xr.DataTree
    mu_mean: dict[str, float]
    reporting_bias: pd.DataFrame
    converged: bool
    retried: bool
    r_hat_max: float
    ess_bulk_min: float
    divergences: int
    seconds: float


def _fit_structure(
    data: MultivariateData, priors: PriorSet, structure: str, seed: int, sampler: SamplerSettings
) -> _StructureFit:
    started = time.perf_counter()
    model = shared_data_model(data, priors, structure)
    var_names = gate_variables(structure, data)
    idata, _, retried = sample_with_retry(model, var_names, seed=seed, sampler=sampler, progressbar=False)
    diagnostics = diagnose(idata, var_names)
    _add_log_likelihood(idata, data)
    mu = idata.posterior["mu"].mean(("chain", "draw")).to_numpy()
    return _StructureFit(
        posterior=idata,
        mu_mean=dict(zip(data.outcome_ids, (float(m) for m in mu))),
        reporting_bias=reporting_bias(data, idata, priors),
        converged=diagnostics.passed,
        retried=retried,
        r_hat_max=float(diagnostics.r_hat_max),
        ess_bulk_min=float(diagnostics.ess_bulk_min),
        divergences=int(diagnostics.divergences),
        seconds=time.perf_counter() - started,
    )


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _outcome_rows(
    base: dict, design: FlagshipDesign, truth: Truth, rep: Replication, fit: _StructureFit | None, uv: dict
) -> list[dict]:
    rows = []
    for j, outcome in enumerate(design.outcome_ids):
        row = base | {
            "outcome": outcome,
            "truth": float(truth.mu[j]),
            "estimable": bool(rep.estimable[j]),
            "k_reported": int(rep.reported[:, j].sum()),
            "has_missing": bool(rep.estimable[j] and not rep.reported[:, j].all()),
        }
        if fit is not None and rep.estimable[j]:
            rb = fit.reporting_bias.set_index("outcome")
            diag = rb.loc[outcome] if outcome in rb.index else None
            mv, univariate = fit.mu_mean[outcome], uv[outcome]
            row |= {
                "z": float(diag["z"]) if diag is not None else np.nan,
                "flagged": bool(diag["flagged"]) if diag is not None else False,
                "z_averaged": float(diag["z_averaged"]) if diag is not None else np.nan,
                "flagged_averaged": bool(diag["flagged_averaged"]) if diag is not None else False,
                "diff_mean": float(diag["mean"]) if diag is not None else np.nan,
                "diff_q025": float(diag["q025"]) if diag is not None else np.nan,
                "diff_q975": float(diag["q975"]) if diag is not None else np.nan,
                "null_sd": float(diag["null_sd"]) if diag is not None else np.nan,
                "mv_mean": mv,
                "uv_mean": univariate,
                "mv_error": mv - float(truth.mu[j]),
                "uv_error": univariate - float(truth.mu[j]),
            }
        rows.append(row)
    return rows


def run_replication(task: Task) -> list[dict]:
    """Simulate, fit the three structures, select by LOO; one row per structure (and selected) and outcome.

    Failures are kept as rows with ``error`` set: of the whole replication (simulation, data), or
    of one structure (the selection then uses the structures that were fitted).
    """
    started = time.perf_counter()
    design, truth = task.design, task.truth
    base = {"condition": task.condition, "rep": task.rep, "seed": task.seed}
    labels = [*STRUCTURES, SELECTED]
    try:
        rep = simulate_replication(
            design, truth, task.condition, np.random.default_rng([task.seed, _SIMULATION_STREAM])
        )
        data = model_data(design, rep)
        uv = {} if data is None else {o: float(r["mean"]) for o, r in _univariate_exact(data, task.priors).iterrows()}
    except Exception as error:  # noqa: BLE001 - every failure is recorded and counted, never dropped
        return [
            base | {"structure": s, "outcome": o, "error": _error_text(error)}
            for s in labels
            for o in design.outcome_ids
        ]
    base |= {"fittable": data is not None, "n_outcomes_fitted": int(rep.estimable.sum())}
    if data is None:
        return [
            r for s in labels for r in _outcome_rows(base | {"structure": s, "error": ""}, design, truth, rep, None, uv)
        ]
    fits: dict[str, _StructureFit] = {}
    errors: dict[str, str] = {}
    for structure in STRUCTURES:
        try:
            fits[structure] = _fit_structure(data, task.priors, structure, task.seed, task.sampler)
        except Exception as error:  # noqa: BLE001
            errors[structure] = _error_text(error)
    selected, comparison = None, None
    if fits:
        try:
            comparison = compare_structures(fits)  # reads only .posterior (with log_likelihood) of each fit
            selected = str(comparison.index[0])
        except Exception as error:  # noqa: BLE001
            errors[SELECTED] = _error_text(error)
    else:
        errors[SELECTED] = "no structure could be fitted"
    seconds = time.perf_counter() - started
    rows = []
    for label in labels:
        name = selected if label == SELECTED else label
        fit = fits.get(name) if name is not None else None
        meta = {
            "structure": label,
            "selected_structure": selected or "",
            "is_selected": label == selected if label != SELECTED else selected is not None,
            "error": errors.get(label, "") if label != SELECTED else errors.get(SELECTED, errors.get(name, "")),
            "seconds_replication": seconds,
        }
        if fit is not None:
            meta |= {
                "converged": fit.converged,
                "retried": fit.retried,
                "r_hat_max": fit.r_hat_max,
                "ess_bulk_min": fit.ess_bulk_min,
                "divergences": fit.divergences,
                "seconds_fit": fit.seconds,
                "elpd_loo": float(comparison.loc[name, "elpd_loo"]) if comparison is not None else np.nan,
                "n_pareto_k_high": int(comparison.loc[name, "n_pareto_k_high"]) if comparison is not None else -1,
            }
        rows += _outcome_rows(base | meta, design, truth, rep, fit, uv)
    return rows


def make_tasks(
    reps: int, seed: int, design: FlagshipDesign, truth: Truth, priors: PriorSet, sampler: SamplerSettings = SAMPLER
) -> list[Task]:
    """Replications ``0..reps-1`` of each condition, interleaved; seed ``SeedSequence([seed, condition, rep])``."""
    batches = []
    for index, condition in enumerate(CONDITIONS):
        seeds = [int(np.random.SeedSequence([seed, index, rep]).generate_state(1)[0]) for rep in range(reps)]
        batches.append([Task(condition, rep, s, design, truth, priors, sampler) for rep, s in enumerate(seeds)])
    return interleave(batches)


def run_study(
    tasks: Sequence[Task],
    *,
    executor: Executor | None = None,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run the tasks (:func:`analysis.studies.parallel.map_tasks`) and return the rows of the CSV."""
    results = map_tasks(run_replication, list(tasks), executor=executor, jobs=jobs, progress=progress)
    return pd.DataFrame([row for rows in results for row in rows], columns=ROW_COLUMNS)


# ---------------------------------------------------------------- summaries


def _flag(values: pd.Series) -> pd.Series:
    """Boolean column with missing values as False."""
    return values.eq(True)


def _text(values: pd.Series) -> pd.Series:
    """Text column with missing values as ""."""
    return values.where(values.notna(), "").astype(str)


def _rate(flags: pd.Series) -> dict:
    values = _flag(flags).to_numpy()
    n = int(values.size)
    p = float(values.mean()) if n else float("nan")
    return {"n": n, "rate": p, "mcse": float(np.sqrt(p * (1.0 - p) / n)) if n else float("nan")}


def _mean_se(values: pd.Series) -> dict:
    x = values.astype(float).dropna().to_numpy()
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "mcse": float("nan")}
    return {"n": n, "mean": float(x.mean()), "mcse": float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")}


def _rmse(values: pd.Series) -> dict:
    x = values.astype(float).dropna().to_numpy()
    n = int(x.size)
    if n == 0:
        return {"rmse": float("nan"), "mcse": float("nan")}
    rmse = float(np.sqrt(np.mean(x**2)))
    se_mse = float(np.std(x**2, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"rmse": rmse, "mcse": se_mse / (2.0 * rmse) if rmse > 0 else float("nan")}


def _fitted(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of fits that ran (no error, fittable) for an estimable outcome."""
    ok = _text(frame["error"]).eq("") & _flag(frame["fittable"])
    return frame[ok & _flag(frame["estimable"]) & frame["mv_mean"].notna()]


def _flag_summary(part: pd.DataFrame) -> dict:
    fitted = _fitted(part)
    missing = fitted[_flag(fitted["has_missing"])]
    return {
        "n_estimable": int(len(fitted)),
        "n_with_missing": int(len(missing)),
        "flag": _rate(fitted["flagged"]),
        "flag_given_missing": _rate(missing["flagged"]),
        "mean_z": _mean_se(missing["z"]),
        "sd_z": float(missing["z"].std(ddof=1)) if len(missing) > 1 else float("nan"),
        "flag_averaged_given_missing": _rate(missing["flagged_averaged"]),
        "mean_z_averaged": _mean_se(missing["z_averaged"]),
        "sd_z_averaged": float(missing["z_averaged"].std(ddof=1)) if len(missing) > 1 else float("nan"),
        "mean_k_reported": float(fitted["k_reported"].mean()) if len(fitted) else float("nan"),
    }


def _error_summary(part: pd.DataFrame) -> dict:
    fitted = _fitted(part)
    return {
        "n": int(len(fitted)),
        "mv_mean_error": _mean_se(fitted["mv_error"]),
        "uv_mean_error": _mean_se(fitted["uv_error"]),
        "mv_minus_uv_error": _mean_se(fitted["mv_error"] - fitted["uv_error"]),
        "mv_rmse": _rmse(fitted["mv_error"]),
        "uv_rmse": _rmse(fitted["uv_error"]),
    }


def _pooled_rate(part: pd.DataFrame, outcomes: Sequence[str], column: str) -> dict:
    """Flag rate over every (replication, outcome) with missing studies, outcomes pooled.

    Its MCSE treats the outcomes of one dataset as independent (they are positively correlated, so
    it is somewhat too small); the per-dataset rate is ``any_outcome_flagged``.
    """
    fitted = _fitted(part)
    fitted = fitted[fitted["outcome"].isin(outcomes) & _flag(fitted["has_missing"])]
    return _rate(fitted[column])


def _dataset_rate(part: pd.DataFrame, outcomes: Sequence[str]) -> dict:
    """Rate of datasets with at least one of ``outcomes`` flagged, among replications whose fit ran."""
    fitted = _fitted(part)
    fitted = fitted[fitted["outcome"].isin(outcomes)]
    per_rep = fitted.groupby("rep")["flagged"].apply(lambda f: bool(_flag(f).any()))
    return _rate(per_rep)


def summarise(rows: pd.DataFrame, *, target_reps: int | None = None) -> dict:
    """Per condition: counts, selection frequencies, flag rates (per structure and outcome), estimation errors."""
    rows = rows.reindex(columns=list(dict.fromkeys([*ROW_COLUMNS, *rows.columns])))
    out = {}
    outcomes = list(dict.fromkeys(rows["outcome"]))
    tested = [o for o in outcomes if o != ALWAYS_REPORTED]
    for condition, frame in rows.groupby("condition", sort=False):
        reps = frame.drop_duplicates("rep")
        errored = _text(frame["error"]).ne("")
        selected_rows = frame[(frame["structure"] == SELECTED)].drop_duplicates("rep")
        selected_rows = selected_rows[_flag(selected_rows["fittable"])]
        chosen = _text(selected_rows["selected_structure"])
        chosen = chosen[chosen.ne("")]
        fittable = _flag(reps["fittable"])
        structures = {}
        for structure, part in frame.groupby("structure", sort=False):
            one = part.drop_duplicates("rep")
            ran = one[_text(one["error"]).eq("") & _flag(one["fittable"])]
            structures[structure] = {
                "n_fits": int(len(ran)),
                "n_errors": int(_text(one["error"]).ne("").sum()),
                "n_not_converged": int((~_flag(ran["converged"])).sum()) if len(ran) else 0,
                "n_retried": int(_flag(ran["retried"]).sum()) if len(ran) else 0,
                "any_outcome_flagged": _dataset_rate(part, tested),
                "pooled_outcomes": _pooled_rate(part, tested, "flagged"),
                "pooled_outcomes_averaged": _pooled_rate(part, tested, "flagged_averaged"),
                "outcomes": {o: _flag_summary(part[part["outcome"] == o]) for o in tested},
                "estimation": {o: _error_summary(part[part["outcome"] == o]) for o in outcomes},
            }
        estimable = frame[frame["structure"] == SELECTED].groupby("outcome", sort=False)["estimable"]
        out[str(condition)] = {
            "n_replications": int(len(reps)),
            "target_replications": target_reps,
            "n_fittable": int(fittable.sum()),
            "n_not_fittable": int((~fittable & _text(reps["error"]).eq("")).sum()),
            "n_replication_errors": int(frame.loc[errored, "rep"].nunique()),
            "n_estimable_per_outcome": {str(o): int(_flag(s).sum()) for o, s in estimable},
            "mean_k_reported": frame[frame["structure"] == SELECTED]
            .groupby("outcome", sort=False)["k_reported"]
            .mean()
            .to_dict(),
            "selection_frequency": {
                s: float((chosen == s).mean()) if len(chosen) else float("nan") for s in STRUCTURES
            },
            "selection_count": {s: int((chosen == s).sum()) for s in STRUCTURES},
            "seconds_per_replication": _mean_se(reps["seconds_replication"]) if "seconds_replication" in reps else None,
            "structures": structures,
        }
    return out


# ---------------------------------------------------------------- main


def _settings(args: argparse.Namespace, design: FlagshipDesign, truth: Truth) -> dict:
    return {
        "reps_per_condition": args.reps,
        "seed": args.seed,
        "jobs": args.jobs,
        "conditions": {
            "ignorable": "the flagship's own reporting pattern (fixed, unrelated to the values)",
            "orb": (f"{ALWAYS_REPORTED} always reported; another outcome reported only if y/sqrt(v) > {Z_SIGNIFICANT}"),
        },
        "sampler": dataclasses.asdict(SAMPLER) | {"retry": "once: target_accept 0.99, 2x tune and draws"},
        "structures": list(STRUCTURES),
        "selection": "highest PSIS-LOO elpd over studies (compare_structures), rows structure='selected'",
        "flag_rule": f"z <= {Z_FLAG}",
        "min_reporting_studies": MIN_REPORTING,
        "truth": {
            "scale": "benefit (Tb_Sp sign-flipped)",
            "mu": dict(zip(design.outcome_ids, truth.mu.tolist())),
            "tau": dict(zip(design.outcome_ids, truth.tau.tolist())),
            "tau_note": "TAU_RESIDUAL of simulate_design (residual SDs; no moderators in this simulation)",
            "R": truth.R.tolist(),
            "rho_within": truth.rho_within,
        },
        "design": {
            "source": design.dataset,
            "k": len(design.study),
            "studies": list(design.study),
            "outcomes": design.outcome_ids,
            "vi": design.vi.tolist(),
            "flagship_reported_per_outcome": dict(zip(design.outcome_ids, design.reported.sum(axis=0).tolist())),
            "missing_cells": "variance = mean of the study's reported variances",
        },
        "fit": "rho_w estimated under its default Beta(2, 2) prior; default SMD priors; no moderators",
        "mcse": "rates: sqrt(p(1-p)/n); means: sd/sqrt(n); RMSE: delta method",
    }


def _write_outputs(out_dir: Path, rows: pd.DataFrame, report: dict) -> None:
    from analysis.report.files import json_text

    text = rows.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    write_bytes_atomic(out_dir / "reporting_bias_power.csv", text.encode("utf-8"))
    write_bytes_atomic(out_dir / "reporting_bias_power.json", json_text(report).encode("utf-8"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.studies.reporting_bias_power", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="replications per condition")
    parser.add_argument("--seed", type=int, default=1, help="seed of the study")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (1: in this process; at most 2 here)")
    parser.add_argument("--chunk", type=int, default=10, help="replications between rewrites of the outputs")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of the JSON and CSV")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study in chunks, rewriting the outputs after each; progress goes to stderr."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    design, truth, priors = flagship_design(), true_parameters(), default_priors("SMD")
    tasks = make_tasks(args.reps, args.seed, design, truth, priors)
    pool = (
        ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"))
        if args.jobs > 1
        else None
    )
    rows = pd.DataFrame()
    try:
        for first in range(0, len(tasks), args.chunk):
            chunk = tasks[first : first + args.chunk]

            def progress(done: int, total: int, offset: int = first, chunk: list[Task] = chunk) -> None:
                task = chunk[done - 1] if pool is None else None
                what = f" ({task.condition} rep {task.rep})" if task is not None else ""
                print(
                    f"[reporting_bias_power] {offset + done}/{len(tasks)} replications{what}, "
                    f"{time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

            new = run_study(chunk, executor=pool, jobs=args.jobs, progress=progress)
            rows = pd.concat([rows, new], ignore_index=True)
            report = {
                "study": "outcome-reporting-bias diagnostic: false-alarm rate and power, SIMULATED data",
                "provenance": "simulated",
                "description": __doc__.split("\n\n")[0],
                "settings": _settings(args, design, truth),
                "replications_done": int(first + len(chunk)),
                "replications_total": len(tasks),
                "complete": first + len(chunk) >= len(tasks),
                "conditions": summarise(rows, target_reps=args.reps),
                "wall_seconds": time.perf_counter() - started,
            }
            _write_outputs(args.out_dir, rows, report)
    finally:
        if pool is not None:
            pool.shutdown()
    print(f"[reporting_bias_power] done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
