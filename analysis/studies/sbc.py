r"""Simulation-based calibration (SBC; Talts et al. 2018, arXiv:1804.06788) of the NUTS models without an exact oracle.

For a model with prior :math:`p(\theta)` and likelihood :math:`p(y \mid \theta)`, one replication
draws :math:`\tilde\theta \sim p(\theta)` and :math:`\tilde y \sim p(y \mid \tilde\theta)`, fits
the model to :math:`\tilde y` with NUTS, thins the posterior to :math:`L` draws
:math:`\theta_1..\theta_L` and records, per scalar parameter, the rank
:math:`r = \#\{l : \theta_l < \tilde\theta\} \in \{0, \dots, L\}`. If the fitted posterior is the
model's exact posterior, :math:`r` is uniform on :math:`\{0..L\}` (Talts et al., Theorem 1),
whatever the prior, the data and the parameter; a posterior too narrow gives a U-shaped rank
histogram, too wide a hump, biased a slope. SBC therefore checks the *whole chain* of model code,
simulator and sampler at once, where no exact engine (:mod:`models.exact`) is available.

**Models and designs** (the flagship simulated dataset ``bmsc_ev_osteoporosis``: 10 studies,
5-10 animals per arm, nine of the ten studies with two treatment arms sharing one control;
:func:`flagship_designs` reads the design from ``data/bmsc_ev_osteoporosis``, fixed over all
replications). The publication-bias selection models are computed by deterministic quadrature,
not NUTS, and are calibrated separately by :mod:`analysis.studies.selection_calibration`.

``multivariate``
    :func:`models.multivariate.build_multivariate_model` (marginal form, padded batched MvNormal,
    LKJ(2) correlation) for the four default outcomes BV/TV, Tb.N, Tb.Sp, Tb.Th with the flagship's
    reporting pattern (10 studies; 6 report all four, 2 miss Tb.N, 2 report only BV/TV) and its
    within-study variances. Parameters and data are one forward
    draw of the model itself (``y`` is a standard MvNormal; the draws of unreported, padded cells
    are discarded). Ranked: every ``mu_k`` and ``tau_k`` and two correlations. The builder bakes
    the observed effects into the graph as a constant, which would give every replication its own
    compile (~50 s); the observed ``y`` is therefore swapped for a shared variable of the same
    values (``pm.observe``), which leaves the log density unchanged and lets one compiled model
    serve all replications (:mod:`analysis.fitting.nuts`). All seven outcomes (8 reporting
    patterns) were measured at about twice the sampling time per fit (13 s against 5-7 s for four,
    on the shared 2-core machine) and a 107 s compile, too slow for 200 replications here.
``multivariate_cs``, ``multivariate_independent``
    The same design and model with the compound-symmetry (one shared between-study correlation,
    ranked as ``rho_shared``) and the independent between-study structures
    (:data:`models.multivariate.STRUCTURES`). In all three multivariate cases the within-study
    correlation is estimated under its Beta(2, 2) prior, as in production: the design keeps only
    the variances of ``S``, the forward draw includes ``rho_within`` and it is ranked.
``arm_level``
    The arm-level multilevel model :func:`models.arm_level.build_arm_level_model` with
    between-comparison heterogeneity ``omega`` on the BV/TV arm structure of the 10 studies (29
    arms, 19 treatment-vs-control comparisons). Its prior of :math:`\log\sigma_i` is centred at the
    data's pooled SD, i.e. it depends on the data; SBC is therefore run in standardised units: the
    arm summaries are built with pooled SD 1 in every study (``scale = 1``), parameters *and*
    data (``contrast``, a normal, and ``s2``, a gamma) are one forward draw of that model, and
    the drawn data are set into the same graph (``pm.set_data``) before fitting. Ranked: ``mu``,
    ``tau``, ``omega`` and ``theta``, ``sigma`` of a study with two treatment arms sharing a
    control (SimStudyA2019) and of the only study with one (SimStudyF2021).

**Sampling.** Every fit goes through :func:`analysis.fitting.sampling.sample_with_retry` (nutpie,
compiled once per worker process; a fit failing a gate is retried once with target_accept 0.99
and doubled tuning and draws, as in production) with the production settings: 4 chains x 1000
draws after 1000 tuning iterations and each model's production target_accept (multivariate
0.95, arm-level 0.99). Shorter fits were tried first: with 4 x 250 draws after 500
tuning iterations the project's gates, set for 4000 draws, failed on short-chain noise alone (r_hat
1.011-1.044 and bulk ESS 171-446 in 5 of 5 arm-level fits, r_hat up to 1.021 in the multivariate
model; the same data passed with 4 x 1000 draws), and the retries this triggered cost more than
the longer fits. The 4000 draws are thinned to :data:`N_KEEP` = 99 (25 evenly spaced draws per
chain, stride ~40, the last one of the last chain dropped; Talts et al. thin to remove
autocorrelation: with bulk ESS >= 400 of 4000 draws the kept draws are close to independent), so
ranks lie in 0..99 (100 values).

**Gates.** The project's gates (:mod:`analysis.results.diagnostics`: r_hat <= 1.01, bulk ESS >=
400, no divergent transition) are checked on the final fit of every replication and written to
the CSV. No replication is dropped: the uniformity tests are reported for all replications
(the primary result; conditioning on passing the gates can itself distort the ranks) and,
separately, for those passing every gate. A replication whose simulation or fit raises is kept
as a row with an empty rank and its error, and counted.

**Uniformity and multiplicity.** Per parameter a chi-square test of the rank histogram on
:data:`N_BINS` = 20 bins of 5 ranks (expected count 10 per bin at 200 replications, 19 degrees of
freedom). Multiplicity: Bonferroni over all ranked parameters of both models
(:func:`n_ranked_parameters`: 10 + 7 = 17) at family level :data:`FAMILY_ALPHA` = 0.01; a
parameter fails if its p-value is below 0.01 / 17 = 5.88e-4, whichever models a run includes.

Run ``python -m analysis.studies.sbc [--reps N] [--seed S] [--jobs J] [--models a,b]
[--out-dir reports]``; writes ``sbc.json`` (per model and parameter: replications, failures,
rank histogram, chi-square statistic and p-value, threshold, pass/fail; settings; wall time),
``sbc.csv`` (one row per replication and parameter) and ``sbc.png`` (rank histograms with the
99% band of a uniform histogram, :func:`analysis.plots.sbc.sbc_rank_figure`), updated after each
model (``--replot`` redraws ``sbc.png`` from existing outputs). All data are SIMULATED.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import xarray as xr
from scipy import stats

from analysis.atomic import write_bytes_atomic
from analysis.config import DEFAULT_DATASET, REPORTS_DIR
from analysis.fitting.sampling import SamplerSettings, sample_with_retry
from analysis.results.diagnostics import DIVERGENCES_MAX, ESS_BULK_MIN, R_HAT_MAX, diagnose
from analysis.studies.parallel import ClientLike, map_tasks
from models.arm_level import ArmSummaries, build_arm_level_model
from models.multivariate import build_multivariate_model, pad_missing
from models.priors import PriorSet, default_priors

__all__ = [
    "CHAINS",
    "DEFAULT_REPS",
    "DRAWS",
    "FAMILY_ALPHA",
    "MODELS",
    "N_BINS",
    "N_KEEP",
    "TUNE",
    "ArmLevelDesign",
    "MultivariateDesign",
    "Param",
    "SBCTask",
    "bonferroni_threshold",
    "flagship_designs",
    "make_tasks",
    "n_ranked_parameters",
    "rank_histogram",
    "rank_statistic",
    "ranked_parameters",
    "run_replication",
    "run_sbc",
    "summarise",
    "thin_draws",
    "uniformity_test",
]

#: Models in the order they are run.
MODELS: tuple[str, ...] = ("multivariate", "arm_level", "multivariate_cs", "multivariate_independent")
#: The between-study structure of each multivariate case.
MULTIVARIATE_STRUCTURES: dict[str, str] = {
    "multivariate": "unstructured",
    "multivariate_cs": "cs",
    "multivariate_independent": "independent",
}
#: Replications per model of ``main``.
DEFAULT_REPS = 200
#: Kept draws per chain, warm-up iterations per chain, chains.
DRAWS, TUNE, CHAINS = 1000, 1000, 4
#: Posterior draws kept for the rank (L); ranks lie in 0..N_KEEP, i.e. N_KEEP + 1 = 100 values.
N_KEEP = 99
#: Bins of the rank histogram: (N_KEEP + 1) / N_BINS = 5 ranks per bin, 10 expected per bin at 200 replications.
N_BINS = 20
#: Family-wise level of the Bonferroni correction over all ranked parameters of all models.
FAMILY_ALPHA = 0.01
#: Outcome whose arm structure makes the arm-level design: reported by all 10 studies.
DESIGN_OUTCOME = "BV_TV"
#: Correlations ranked in the multivariate model.
RANKED_PAIRS: tuple[str, ...] = ("BV_TV~Tb_N", "Tb_Sp~Tb_Th")
#: Studies whose theta and sigma are ranked in the arm-level model: two treatment arms sharing a control, and one.
RANKED_STUDIES: tuple[str, ...] = ("SimStudyA2019", "SimStudyF2021")
#: Name of the shared variable that replaces the multivariate model's constant observed effects.
OBSERVED_NAME = "y_observed"
#: Random streams of a replication: the simulation (the sampler takes the task seed itself).
_SIMULATION_STREAM = 1


@dataclass(frozen=True)
class Param:
    """One ranked scalar: variable ``var``, optionally the element ``label`` of its dimension ``dim``."""

    var: str
    dim: str | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        """``var`` or ``var[label]``."""
        return self.var if self.label is None else f"{self.var}[{self.label}]"


@dataclass(frozen=True, eq=False)
class MultivariateDesign:
    """Fixed inputs of the multivariate replications: reporting pattern and within-study covariances."""

    study: tuple[str, ...]
    outcome: tuple[str, ...]
    reported: np.ndarray
    S: np.ndarray
    structure: str = "unstructured"
    pairs: tuple[str, ...] = RANKED_PAIRS


@dataclass(frozen=True, eq=False)
class ArmLevelDesign:
    """Fixed inputs of the arm-level replications: arm structure in standardised units (scale 1)."""

    data: ArmSummaries
    studies: tuple[str, ...] = RANKED_STUDIES


Design = MultivariateDesign | ArmLevelDesign


@dataclass(frozen=True, eq=False)
class SBCTask:
    """One replication: model name, replication number, its own seed, the design and the priors."""

    model: str
    rep: int
    seed: int
    design: Design
    priors: PriorSet


@dataclass(frozen=True)
class _Case:
    simulate: Callable[[Design, PriorSet, np.random.Generator], tuple[pm.Model, dict[str, np.ndarray]]]
    params: Callable[[Design], list[Param]]
    gate_vars: tuple[str, ...]
    sampler: SamplerSettings


# ---------------------------------------------------------------- ranks and the uniformity test


def thin_draws(draws: np.ndarray, n_keep: int = N_KEEP) -> np.ndarray:
    """Evenly spaced draws of every chain, ``n_keep`` in all.

    Parameters
    ----------
    draws : numpy.ndarray
        ``(chain, draw)`` posterior draws of one scalar.
    n_keep : int
        Draws to keep: ``ceil(n_keep / chains)`` evenly spaced per chain, the surplus cut from the last chain.

    Returns
    -------
    numpy.ndarray
        ``(n_keep,)`` draws.
    """
    draws = np.asarray(draws, dtype=float)
    chains, n = draws.shape
    per_chain = -(-n_keep // chains)
    if per_chain > n:
        raise ValueError(f"cannot keep {n_keep} draws of {chains} chains x {n}")
    index = np.round(np.linspace(0, n - 1, per_chain)).astype(int)
    return draws[:, index].ravel()[:n_keep]


def rank_statistic(draws: np.ndarray, truth: float) -> int:
    """Number of posterior draws below the true value (Talts et al.'s rank, ``0..len(draws)``)."""
    return int(np.sum(np.asarray(draws, dtype=float) < truth))


def rank_histogram(ranks: Sequence[int] | np.ndarray, n_ranks: int = N_KEEP + 1, n_bins: int = N_BINS) -> np.ndarray:
    """Counts of ranks in ``n_bins`` equal bins of ``n_ranks // n_bins`` consecutive ranks.

    Raises
    ------
    ValueError
        If ``n_bins`` does not divide ``n_ranks`` or a rank lies outside ``0..n_ranks-1``.
    """
    r = np.asarray(ranks, dtype=int)
    if n_ranks % n_bins:
        raise ValueError(f"{n_bins} bins do not divide {n_ranks} rank values evenly")
    if r.size and (r.min() < 0 or r.max() >= n_ranks):
        raise ValueError(f"ranks must lie in 0..{n_ranks - 1}")
    return np.bincount(r // (n_ranks // n_bins), minlength=n_bins)


def uniformity_test(
    ranks: Sequence[int] | np.ndarray, n_ranks: int = N_KEEP + 1, n_bins: int = N_BINS
) -> tuple[float, float]:
    """Chi-square statistic and p-value of the rank histogram against uniform (``n_bins - 1`` d.o.f.); NaN if empty."""
    counts = rank_histogram(ranks, n_ranks, n_bins)
    if counts.sum() == 0:
        return float("nan"), float("nan")
    result = stats.chisquare(counts)
    return float(result.statistic), float(result.pvalue)


def bonferroni_threshold(n_tests: int, family_alpha: float = FAMILY_ALPHA) -> float:
    """Per-test level of a Bonferroni correction: ``family_alpha / n_tests``."""
    if n_tests < 1 or not 0 < family_alpha < 1:
        raise ValueError(f"need n_tests >= 1 and 0 < family_alpha < 1, got {n_tests}, {family_alpha}")
    return family_alpha / n_tests


# ---------------------------------------------------------------- designs


def flagship_designs(path: Path = DEFAULT_DATASET) -> dict[str, Design]:
    """The fixed designs of the two models, read from the flagship dataset (see the module docstring).

    Parameters
    ----------
    path : pathlib.Path
        Dataset folder (default ``data/bmsc_ev_osteoporosis``).

    Returns
    -------
    dict
        Model name (:data:`MODELS`) -> its design.
    """
    from analysis.dataset.effects import compute_effects, study_effects
    from analysis.dataset.load import load_dataset
    from analysis.fitting.arm_level import outcome_arm_summaries
    from analysis.fitting.multivariate_data import multivariate_data_from_dataset

    dataset = load_dataset(path)
    table = compute_effects(dataset)
    effects = study_effects(table, DESIGN_OUTCOME)
    study = tuple(str(s) for s in effects["study"])
    arms = outcome_arm_summaries(dataset, DESIGN_OUTCOME, list(study))
    standardised = dataclasses.replace(
        arms,
        scale=np.ones(arms.k),
        arm_var=np.ones(len(arms.arm)),
        contrast=np.zeros(len(arms.comparison)),
    )
    mv = multivariate_data_from_dataset(dataset, table=table)
    multivariate = {
        name: MultivariateDesign(
            study=tuple(mv.study), outcome=tuple(mv.outcome_ids), reported=mv.reported, S=mv.S, structure=structure
        )
        for name, structure in MULTIVARIATE_STRUCTURES.items()
    }
    return {**multivariate, "arm_level": ArmLevelDesign(data=standardised)}


def describe_design(design: Design) -> dict:
    """JSON-ready description of a design (sizes and structure) for the report."""
    if isinstance(design, MultivariateDesign):
        return {
            "k": len(design.study),
            "outcomes": list(design.outcome),
            "reported_per_outcome": design.reported.sum(axis=0).astype(int).tolist(),
            "missingness_patterns": int(np.unique(design.reported, axis=0).shape[0]),
            "structure": design.structure,
            "rho_within": f"estimated, prior {PriorSet().rho_within}",
        }
    data = design.data
    return {
        "k": data.k,
        "arms": len(data.arm),
        "comparisons": len(data.comparison),
        "animals_per_arm": [int(data.arm_n.min()), int(data.arm_n.max())],
        "studies_with_two_comparisons": int(np.sum(np.bincount(data.comparison_study) == 2)),
        "units": "standardised: pooled SD prior centre 1 in every study",
    }


# ---------------------------------------------------------------- multivariate model


def _multivariate_model(design: MultivariateDesign, yi: np.ndarray, priors: PriorSet) -> pm.Model:
    """The builder's model with its constant observed ``y`` swapped for a shared variable of the same values."""
    model = build_multivariate_model(
        yi,
        design.S,
        study=design.study,
        outcome=design.outcome,
        priors=priors,
        structure=design.structure,
        rho_within_prior=priors.rho_within,
    )
    _, y_padded, _ = pad_missing(yi, design.S)
    return pm.observe(model, {"y": pytensor.shared(y_padded, name=OBSERVED_NAME)})


def _simulate_multivariate(
    design: MultivariateDesign, priors: PriorSet, rng: np.random.Generator
) -> tuple[pm.Model, dict[str, np.ndarray]]:
    prior_model = _multivariate_model(design, np.where(design.reported, 0.0, np.nan), priors)
    names = ("mu", "tau", "rho", "rho_within", "y") + (("rho_shared",) if design.structure == "cs" else ())
    truth = dict(zip(names, pm.draw([prior_model[n] for n in names], random_seed=rng)))
    yi = np.where(design.reported, truth.pop("y"), np.nan)
    return _multivariate_model(design, yi, priors), truth


def _multivariate_params(design: MultivariateDesign) -> list[Param]:
    per_outcome = [Param(var, "outcome", o) for var in ("mu", "tau") for o in design.outcome]
    correlation = {
        "unstructured": [Param("rho", "pair", pair) for pair in design.pairs],
        "cs": [Param("rho_shared")],
        "independent": [],
    }[design.structure]
    return per_outcome + correlation + [Param("rho_within")]


# ---------------------------------------------------------------- arm-level model


def _arm_level_model(design: ArmLevelDesign, priors: PriorSet) -> pm.Model:
    return build_arm_level_model(design.data, tau_prior=priors.tau, beta_priors=[priors.mu], omega_prior=priors.omega)


def _simulate_arm_level(
    design: ArmLevelDesign, priors: PriorSet, rng: np.random.Generator
) -> tuple[pm.Model, dict[str, np.ndarray]]:
    model = _arm_level_model(design, priors)
    names = ("mu", "tau", "omega", "theta", "sigma", "contrast", "s2")
    truth = dict(zip(names, pm.draw([model[n] for n in names], random_seed=rng)))
    with model:
        pm.set_data({"u": truth.pop("contrast"), "arm_var": truth.pop("s2")})
    return model, truth


def _arm_level_params(design: ArmLevelDesign) -> list[Param]:
    studies = [Param(var, "study", s) for var in ("theta", "sigma") for s in design.studies]
    return [Param("mu"), Param("tau"), Param("omega"), *studies]


def _sbc_sampler(target_accept: float) -> SamplerSettings:
    return SamplerSettings(draws=DRAWS, tune=TUNE, chains=CHAINS, target_accept=target_accept)


def _cases() -> dict[str, _Case]:
    from analysis.fitting.arm_level import DEFAULT_SAMPLER as ARM_SAMPLER

    gates = {"unstructured": ("rho",), "cs": ("rho_shared",), "independent": ()}
    multivariate = {
        name: _Case(
            _simulate_multivariate,
            _multivariate_params,
            ("mu", "tau", *gates[structure], "rho_within"),
            _sbc_sampler(SamplerSettings().target_accept),
        )
        for name, structure in MULTIVARIATE_STRUCTURES.items()
    }
    return {
        **multivariate,
        "arm_level": _Case(
            _simulate_arm_level,
            _arm_level_params,
            ("mu", "tau", "omega", "theta", "sigma"),
            _sbc_sampler(ARM_SAMPLER.target_accept),
        ),
    }


def ranked_parameters(model: str, design: Design) -> list[Param]:
    """The parameters ranked for ``model`` with ``design``."""
    return _cases()[model].params(design)


def n_ranked_parameters(designs: dict[str, Design]) -> int:
    """Number of uniformity tests over all models of :data:`MODELS` (the Bonferroni family)."""
    return sum(len(ranked_parameters(m, designs[m])) for m in MODELS)


# ---------------------------------------------------------------- one replication


def _value(values: dict[str, np.ndarray], param: Param, coords: dict[str, tuple]) -> float:
    array = np.asarray(values[param.var], dtype=float)
    if param.dim is None:
        return float(array)
    return float(array[list(coords[param.dim]).index(param.label)])


def _draws(posterior: xr.DataTree, param: Param) -> np.ndarray:
    array = posterior[param.var]
    if param.dim is not None:
        array = array.sel({param.dim: param.label})
    return array.transpose("chain", "draw").to_numpy()


def run_replication(task: SBCTask) -> list[dict]:
    """Simulate, fit and rank one replication; one row per ranked parameter (see ``sbc.csv``).

    A replication whose simulation or fit raises returns rows with ``rank`` None and the error.
    """
    started = time.perf_counter()
    case = _cases()[task.model]
    params = case.params(task.design)
    base = {"model": task.model, "rep": task.rep, "seed": task.seed}
    try:
        model, truth = case.simulate(task.design, task.priors, np.random.default_rng([task.seed, _SIMULATION_STREAM]))
        idata, _, retried = sample_with_retry(
            model, list(case.gate_vars), seed=task.seed, sampler=case.sampler, progressbar=False
        )
        diagnostics = diagnose(idata, list(case.gate_vars))
    except Exception as error:  # noqa: BLE001 - every failure is recorded and counted, never dropped
        return [base | {"parameter": p.name, "rank": None, "error": f"{type(error).__name__}: {error}"} for p in params]
    coords = {name: tuple(values) for name, values in model.coords.items() if values is not None}
    gates = {
        "r_hat_max": diagnostics.r_hat_max,
        "ess_bulk_min": diagnostics.ess_bulk_min,
        "divergences": diagnostics.divergences,
        "passed_gates": diagnostics.passed,
        "retried": retried,
        "seconds": time.perf_counter() - started,
        "error": "",
    }
    rows = []
    for param in params:
        draws = _draws(idata.posterior, param)
        kept = thin_draws(draws)
        value = _value(truth, param, coords)
        rows.append(
            base
            | {
                "parameter": param.name,
                "truth": value,
                "rank": rank_statistic(kept, value),
                "n_draws_after_thinning": kept.size,
                "posterior_mean": float(draws.mean()),
                "posterior_sd": float(draws.std()),
            }
            | gates
        )
    return rows


def make_tasks(model: str, reps: int, seed: int, design: Design, priors: PriorSet) -> list[SBCTask]:
    """Replications ``0..reps-1`` of ``model``, each with its own seed derived from ``(seed, model, rep)``."""
    stream = MODELS.index(model)
    seeds = [int(np.random.SeedSequence([seed, stream, rep]).generate_state(1)[0]) for rep in range(reps)]
    return [SBCTask(model, rep, s, design, priors) for rep, s in enumerate(seeds)]


def run_sbc(
    models: Sequence[str],
    *,
    reps: int,
    seed: int,
    designs: dict[str, Design] | None = None,
    priors: PriorSet | None = None,
    executor: Executor | ClientLike | None = None,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run ``reps`` SBC replications of each model and return the rows of ``sbc.csv``.

    Parameters
    ----------
    models : sequence of str
        Names from :data:`MODELS`.
    reps, seed : int
        Replications per model and the seed every replication's seed is derived from.
    designs : dict, optional
        Default :func:`flagship_designs`.
    priors : PriorSet, optional
        Default the SMD defaults (:func:`models.priors.default_priors`).
    executor : concurrent.futures.Executor or dask Client, optional
        Passed to :func:`analysis.studies.parallel.map_tasks`.
    jobs : int
        Worker processes when no executor is given (1: in this process).
    progress : callable, optional
        ``progress(done, total)`` after every replication.

    Returns
    -------
    pandas.DataFrame
        One row per replication and ranked parameter.
    """
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; choose from {MODELS}")
    designs = designs or flagship_designs()
    priors = priors or default_priors("SMD")
    tasks = [t for m in models for t in make_tasks(m, reps, seed, designs[m], priors)]
    results = map_tasks(run_replication, tasks, executor=executor, jobs=jobs, progress=progress)
    return pd.DataFrame([row for rows in results for row in rows])


# ---------------------------------------------------------------- summaries


def _test_block(ranks: pd.Series, threshold: float) -> dict:
    values = ranks.astype(int).to_numpy()
    chi2, p = uniformity_test(values)
    return {
        "n": int(values.size),
        "counts": rank_histogram(values).tolist(),
        "expected_per_bin": values.size / N_BINS,
        "chi2": chi2,
        "df": N_BINS - 1,
        "p_value": p,
        "pass": bool(p >= threshold) if values.size else None,
    }


def _parameter_summary(frame: pd.DataFrame, threshold: float) -> dict:
    ranked = frame[frame["rank"].notna()]
    passed = ranked[ranked["passed_gates"].astype(bool)]
    return {
        "n_replications": int(len(frame)),
        "n_errors": int(len(frame) - len(ranked)),
        "n_failed_gates": int(len(ranked) - len(passed)),
        "all_replications": _test_block(ranked["rank"], threshold),
        "gates_passed_only": _test_block(passed["rank"], threshold),
    }


def _model_summary(frame: pd.DataFrame, threshold: float, target_reps: int) -> dict:
    reps = frame.drop_duplicates("rep")
    fitted = reps[reps["rank"].notna()]
    parameters = {p: _parameter_summary(g, threshold) for p, g in frame.groupby("parameter", sort=False)}
    return {
        "n_replications": int(len(reps)),
        "target_replications": target_reps,
        "complete": bool(len(reps) >= target_reps),
        "n_errors": int(len(reps) - len(fitted)),
        "n_failed_gates": int((~fitted["passed_gates"].astype(bool)).sum()),
        "failed_gates_by_kind": {
            "r_hat": int((fitted["r_hat_max"] > R_HAT_MAX).sum()),
            "ess_bulk": int((fitted["ess_bulk_min"] < ESS_BULK_MIN).sum()),
            "divergences": int((fitted["divergences"] > DIVERGENCES_MAX).sum()),
        },
        "n_retried": int(fitted["retried"].astype(bool).sum()),
        "ess_bulk_min_quantiles": {
            q: float(fitted["ess_bulk_min"].quantile(float(q))) if len(fitted) else None for q in ("0.05", "0.5")
        },
        "seconds_per_replication": {
            "mean": float(fitted["seconds"].mean()) if len(fitted) else None,
            "median": float(fitted["seconds"].median()) if len(fitted) else None,
            "first": float(fitted["seconds"].iloc[0]) if len(fitted) else None,
        },
        "all_parameters_pass": all(p["all_replications"]["pass"] for p in parameters.values()),
        "parameters": parameters,
    }


def summarise(rows: pd.DataFrame, *, threshold: float, target_reps: int | dict[str, int]) -> dict[str, dict]:
    """Per model: counts, gate failures, timing and, per parameter, the uniformity tests (see ``sbc.json``).

    ``target_reps`` is one number for every model or a number per model.
    """

    def target(model: str) -> int:
        return target_reps[model] if isinstance(target_reps, dict) else target_reps

    return {m: _model_summary(g, threshold, target(m)) for m, g in rows.groupby("model", sort=False)}


def _earlier_rows(out_dir: Path, models: Sequence[str]) -> pd.DataFrame:
    """Rows of an earlier ``sbc.csv`` for the models of :data:`MODELS` not rerun now (removed models are dropped)."""
    path = out_dir / "sbc.csv"
    if not path.exists():
        return pd.DataFrame()
    earlier = pd.read_csv(path)
    return earlier[earlier["model"].isin(MODELS) & ~earlier["model"].isin(models)].reset_index(drop=True)


# ---------------------------------------------------------------- main


def _settings(args: argparse.Namespace, n_tests: int, threshold: float) -> dict:
    cases = _cases()
    return {
        "reps_per_model": args.reps,
        "seed": args.seed,
        "jobs": args.jobs,
        "models": args.models.split(","),
        "sampler": {
            m: dataclasses.asdict(c.sampler) | {"gate_vars": list(c.gate_vars), "retry": "once: target_accept 0.99, 2x"}
            for m, c in cases.items()
        },
        "thinning": (
            f"{-(-N_KEEP // CHAINS)} evenly spaced draws per chain, {N_KEEP} kept "
            f"(stride ~{DRAWS // -(-N_KEEP // CHAINS)}; ~{2 * DRAWS // -(-N_KEEP // CHAINS)} after a retry)"
        ),
        "n_draws_for_rank": N_KEEP,
        "rank_values": N_KEEP + 1,
        "n_bins": N_BINS,
        "test": f"chi-square of the rank histogram against uniform, {N_BINS - 1} d.o.f.",
        "multiplicity": (
            f"Bonferroni over all {n_tests} ranked parameters of the models {list(MODELS)} "
            f"at family level {FAMILY_ALPHA}: a parameter fails if p < {FAMILY_ALPHA}/{n_tests}"
        ),
        "family_alpha": FAMILY_ALPHA,
        "n_tests": n_tests,
        "threshold": threshold,
        "gates": {"r_hat_max": R_HAT_MAX, "ess_bulk_min": ESS_BULK_MIN, "divergences_max": DIVERGENCES_MAX},
        "primary": "all replications (gate failures included); gates_passed_only is reported beside it",
    }


def _write_outputs(out_dir: Path, rows: pd.DataFrame, report: dict) -> None:
    from analysis.report.files import write_csv, write_json

    write_csv(out_dir / "sbc.csv", rows)
    write_json(out_dir / "sbc.json", report)
    _write_figure(out_dir, rows, report)


def _write_figure(out_dir: Path, rows: pd.DataFrame, report: dict) -> None:
    from analysis.plots.sbc import sbc_rank_figure

    p_values = {
        (m, p): s["all_replications"]["p_value"]
        for m, ms in report["models"].items()
        for p, s in ms["parameters"].items()
    }
    threshold = report["settings"]["threshold"]
    fig = sbc_rank_figure(rows, n_ranks=N_KEEP + 1, n_bins=N_BINS, p_values=p_values, threshold=threshold)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    write_bytes_atomic(out_dir / "sbc.png", buffer.getvalue())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.studies.sbc", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="replications per model")
    parser.add_argument("--seed", type=int, default=1, help="seed of the study")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (1: in this process)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of sbc.json, sbc.csv, sbc.png")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw sbc.png from the sbc.csv and sbc.json in --out-dir"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study model by model, rewriting the outputs after each model; progress goes to stderr."""
    args = _parser().parse_args(argv)
    if args.replot:
        report = json.loads((args.out_dir / "sbc.json").read_text(encoding="utf-8"))
        _write_figure(args.out_dir, pd.read_csv(args.out_dir / "sbc.csv"), report)
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    started = time.perf_counter()
    designs = flagship_designs()
    n_tests = n_ranked_parameters(designs)
    threshold = bonferroni_threshold(n_tests)
    rows = _earlier_rows(args.out_dir, models)
    target = {m: int(g["rep"].nunique()) for m, g in rows.groupby("model")} | {m: args.reps for m in models}
    for model in models:
        model_started = time.perf_counter()

        def progress(done: int, total: int, model: str = model, t0: float = model_started) -> None:
            print(f"[sbc] {model}: {done}/{total} replications, {time.perf_counter() - t0:.0f} s", file=sys.stderr)

        new = run_sbc([model], reps=args.reps, seed=args.seed, designs=designs, jobs=args.jobs, progress=progress)
        rows = pd.concat([rows, new], ignore_index=True)
        report = {
            "study": "simulation-based calibration (Talts et al. 2018), SIMULATED data",
            "settings": _settings(args, n_tests, threshold) | {"reps_per_model": target, "models": list(target)},
            "designs": {m: describe_design(designs[m]) for m in rows["model"].unique()},
            "models": summarise(rows, threshold=threshold, target_reps=target),
            "models_pending": models[models.index(model) + 1 :],
            "wall_seconds": time.perf_counter() - started,
        }
        _write_outputs(args.out_dir, rows, report)
        print(f"[sbc] {model} done in {time.perf_counter() - model_started:.0f} s; outputs written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
