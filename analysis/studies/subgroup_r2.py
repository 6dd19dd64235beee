"""How much heterogeneity a pure-noise moderator "explains" at the flagship design's k (SIMULATED data).

Design: each replicate is one call of :func:`analysis.dataset.simulate.simulate_dataset` with its
own seed (the 10 studies of the simulated ``bmsc_ev_osteoporosis`` design, seven outcomes,
k = 4-10 studies per outcome), written to a temporary folder and read back with
:func:`analysis.dataset.load.load_dataset`, as in :mod:`analysis.studies.selection_power`. A
pure-noise study-level moderator ``noise`` (one standard-normal value per study, from
``numpy.random.default_rng([seed, NOISE_STREAM])``, independent of everything simulated) is added
to the study table, and every outcome with ``k >= MIN_K`` studies is fitted one moderator at a
time exactly as ``evmeta run`` does (:func:`analysis.fitting.meta_regression.fit_subgroups_one_at_a_time`,
exact engine, default priors, fit seed :data:`FIT_SEED`): the noise moderator, and as a positive
control the declared moderator :data:`CONTROL` (engineered vs native EVs, a true contrast of
0.5 SMD in favour of engineered EVs on every outcome; truth.json).

Recorded per fit: the posterior of the Bayesian R² (Gelman et al. 2019; mean, median, 95% ETI),
the former point R² ``max(0, 1 - median(tau2_MR) / median(tau2_RE))`` and the slope or contrast
(mean, 95% ETI, P(favours treatment)).

Measured (:func:`summary_table`, overall and by k): the distribution of the posterior median R²
and of the point R², the share of fits with R² >= :data:`LARGE_R2` by each, the share whose R²
95% ETI lower bound exceeds :data:`LOWER_BOUND` (a rule that would claim "the moderator explains
heterogeneity"), and the share with P(favours) >= 0.95 or <= 0.05. For the noise moderator every
such share is a false-positive rate. Monte Carlo SEs cluster the fits of one replicate.

Run ``python -m analysis.studies.subgroup_r2 [--seeds N]``: seeds 1..N; writes
``reports/subgroup_r2.csv`` (one row per fit) and ``reports/subgroup_r2.json`` (the summary).
All data are SIMULATED.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.config import REPORTS_DIR
from analysis.dataset import simulate_design as D
from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import Dataset, Moderator, load_dataset
from analysis.dataset.simulate import simulate_dataset, write_dataset
from analysis.fitting.meta_regression import R2_N_DRAWS, fit_subgroups_one_at_a_time
from analysis.report.files import write_csv, write_json
from analysis.results.meta_regression import MIN_K_SUBGROUPS, MetaRegressionResult
from analysis.studies.parallel import map_tasks

__all__ = [
    "COLUMNS",
    "CONTROL",
    "DEFAULT_N_SEEDS",
    "FIT_SEED",
    "LARGE_R2",
    "LOWER_BOUND",
    "NOISE",
    "NOISE_STREAM",
    "simulate_and_fit",
    "summary_table",
    "with_noise_moderator",
]

#: Name of the pure-noise moderator.
NOISE = "noise"
#: Declared moderator of the design with a true effect (positive control).
CONTROL = "engineered"
#: Random stream of the noise moderator, after the simulation's own seed.
NOISE_STREAM = 16
#: Seed of every fit (the exact engine's joint draws behind R²), as in ``evmeta run``.
FIT_SEED = 1
#: Replicates of ``main``: about 1.1 CPU-s each (two moderators x seven outcomes, exact engine; 300
#: replicates took 5.4 CPU-min, 7 min on a shared 2-core machine). Monte Carlo SE of a share near
#: 0.1 over the 2100 noise fits: about 0.007.
DEFAULT_N_SEEDS = 300
#: Fewest studies for an outcome to be fitted (as :mod:`analysis.studies.selection_power`).
MIN_K = 3
#: "Explains heterogeneity": the lower bound of the 95% ETI of R² above this value.
LOWER_BOUND = 0.1
#: A "large" R², the issue's 40%.
LARGE_R2 = 0.4
#: Columns of :func:`simulate_and_fit`, in order.
COLUMNS: tuple[str, ...] = (
    "seed",
    "outcome",
    "moderator",
    "is_noise",
    "k",
    "r2_mean",
    "r2_median",
    "r2_q025",
    "r2_q975",
    "r2_point",
    "effect_mean",
    "effect_q025",
    "effect_q975",
    "prob_benefit",
)
#: k bands of the summary (inclusive bounds).
K_BANDS: dict[str, tuple[int, int]] = {
    "all": (MIN_K, 10_000),
    "k 3-6": (3, 6),
    "k 7-9": (7, 9),
    "k >= 10": (10, 10_000),
}


def with_noise_moderator(dataset: Dataset, rng: np.random.Generator) -> Dataset:
    """The dataset with a numeric study-level moderator :data:`NOISE` of independent N(0, 1) values.

    Parameters
    ----------
    dataset : Dataset
        A loaded dataset (its study table is not modified).
    rng : numpy.random.Generator
        Source of the noise values, one per study in study-table order.

    Returns
    -------
    Dataset
        A copy with the extra column and declaration.
    """
    studies = dataset.studies.assign(**{NOISE: rng.standard_normal(len(dataset.studies))})
    moderators = dataset.moderators | {NOISE: Moderator(NOISE, "numeric")}
    return dataclasses.replace(dataset, studies=studies, moderators=moderators)


def _row(result: MetaRegressionResult) -> dict:
    """The R² posterior, the former point R² and the single contrast or slope of one fit."""
    (effect,) = result.contrasts + result.slopes
    r2 = result.R2
    return {
        "k": result.k,
        "r2_mean": r2["mean"],
        "r2_median": r2["median"],
        "r2_q025": r2["q025"],
        "r2_q975": r2["q975"],
        "r2_point": r2["point_ratio_of_medians"]["value"],
        "effect_mean": effect["mean"],
        "effect_q025": effect["q025"],
        "effect_q975": effect["q975"],
        "prob_benefit": effect["prob_benefit"],
    }


def simulate_and_fit(seed: int) -> pd.DataFrame:
    """Simulate one dataset, add the noise moderator and fit it and :data:`CONTROL` to every outcome.

    Parameters
    ----------
    seed : int
        Seed of :func:`analysis.dataset.simulate.simulate_dataset` and, with :data:`NOISE_STREAM`,
        of the noise moderator.

    Returns
    -------
    pandas.DataFrame
        One row per outcome with ``k >= MIN_K`` and moderator, columns :data:`COLUMNS`.
    """
    sim = simulate_dataset(seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="evmeta-subgroup-r2-") as tmp:
        loaded = load_dataset(write_dataset(sim, Path(tmp) / D.NAME))
        table = compute_effects(loaded)
        dataset = with_noise_moderator(loaded, np.random.default_rng([seed, NOISE_STREAM]))
        for outcome in dataset.outcomes:
            if len(study_effects(table, outcome)) < MIN_K:
                continue
            fits = fit_subgroups_one_at_a_time(
                dataset, outcome, moderators=[NOISE, CONTROL], engine="exact", seed=FIT_SEED, table=table
            )
            rows += [
                {"seed": seed, "outcome": outcome, "moderator": name, "is_noise": name == NOISE} | _row(fit)
                for name, fit in fits.items()
            ]
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))


def _clustered_mean(values: pd.Series, seeds: pd.Series) -> tuple[float, float]:
    """Mean of ``values`` and its Monte Carlo SE, clustering the rows of one seed (ratio estimator)."""
    per_seed = values.astype(float).groupby(seeds.to_numpy()).agg(["sum", "count"])
    total = per_seed["count"].sum()
    mean = per_seed["sum"].sum() / total
    m = len(per_seed)
    if m < 2:
        return float(mean), float("nan")
    resid = per_seed["sum"] - mean * per_seed["count"]
    return float(mean), float(np.sqrt(m / (m - 1) * (resid**2).sum()) / total)


def _band_summary(part: pd.DataFrame) -> dict:
    """Shares (with clustered MCSE) and quantiles of one moderator kind in one k band."""
    seeds = part["seed"]
    shares = {
        "median_r2_ge_large": part["r2_median"] >= LARGE_R2,
        "point_r2_ge_large": part["r2_point"] >= LARGE_R2,
        "eti_lower_gt_bound": part["r2_q025"] > LOWER_BOUND,
        "eti_lower_gt_0.05": part["r2_q025"] > 0.05,
        "prob_favours_extreme": (part["prob_benefit"] >= 0.95) | (part["prob_benefit"] <= 0.05),
        "effect_eti_excludes_0": (part["effect_q025"] > 0) | (part["effect_q975"] < 0),
    }
    out: dict = {"n_fits": len(part), "n_seeds": int(seeds.nunique())}
    for name, flags in shares.items():
        mean, se = _clustered_mean(flags, seeds)
        out |= {name: mean, f"{name}_mcse": se}
    for column in ("r2_median", "r2_point", "r2_q025", "r2_q975"):
        q = part[column].quantile([0.1, 0.25, 0.5, 0.75, 0.9])
        out |= {f"{column}_p{int(100 * p)}": float(v) for p, v in q.items()}
        out[f"{column}_mean"] = float(part[column].mean())
    return out


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Summary of the fits by moderator kind (noise, control) and k band.

    Parameters
    ----------
    runs : pandas.DataFrame
        Rows of :func:`simulate_and_fit` (any number of seeds).

    Returns
    -------
    pandas.DataFrame
        One row per ``moderator`` (:data:`NOISE`, :data:`CONTROL`) and ``band`` (:data:`K_BANDS`)
        with ``n_fits, n_seeds``; shares with their clustered Monte Carlo SE (``*_mcse``):
        ``median_r2_ge_large`` (posterior median R² >= :data:`LARGE_R2`), ``point_r2_ge_large``
        (the former point R² >= it), ``eti_lower_gt_bound`` (95% ETI lower bound of R² >
        :data:`LOWER_BOUND`), ``eti_lower_gt_0.05``, ``prob_favours_extreme`` (P(favours) >= 0.95
        or <= 0.05), ``effect_eti_excludes_0``; and the 10/25/50/75/90th percentiles and mean of
        the posterior median R², the point R² and the R² ETI bounds over fits.
    """
    rows = []
    for moderator in (NOISE, CONTROL):
        kind = runs[runs["moderator"] == moderator]
        for band, (lo, hi) in K_BANDS.items():
            part = kind[(kind["k"] >= lo) & (kind["k"] <= hi)]
            if not part.empty:
                rows.append({"moderator": moderator, "band": band} | _band_summary(part))
    return pd.DataFrame(rows)


def _print_summary(table: pd.DataFrame) -> None:
    print("SIMULATED data. Share of fits (Monte Carlo SE), by moderator and k:")
    print(
        f"{'moderator':<11}{'band':<9}{'fits':>6}  {'median R2>=0.4':>16}  {'point R2>=0.4':>15}  "
        f"{'ETI low>' + format(LOWER_BOUND, 'g'):>15}  {'P(fav) extreme':>15}  {'median of median R2':>20}"
    )
    for _, r in table.iterrows():
        print(
            f"{r['moderator']:<11}{r['band']:<9}{r['n_fits']:>6}  "
            f"{r['median_r2_ge_large']:>9.3f} ({r['median_r2_ge_large_mcse']:.3f})  "
            f"{r['point_r2_ge_large']:>8.3f} ({r['point_r2_ge_large_mcse']:.3f})  "
            f"{r['eti_lower_gt_bound']:>8.3f} ({r['eti_lower_gt_bound_mcse']:.3f})  "
            f"{r['prob_favours_extreme']:>8.3f} ({r['prob_favours_extreme_mcse']:.3f})  "
            f"{r['r2_median_p50']:>20.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Command line: run seeds 1..N, write the CSV and JSON, print a summary."""
    parser = argparse.ArgumentParser(prog="python -m analysis.studies.subgroup_r2", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=DEFAULT_N_SEEDS, help="replicates (simulation seeds 1..N)")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR, help="folder of subgroup_r2.csv/.json")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (results do not depend on it)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2")
    clock = (time.perf_counter(), time.process_time())
    runs = pd.concat(map_tasks(simulate_and_fit, list(range(1, args.seeds + 1)), jobs=args.jobs), ignore_index=True)
    seconds, cpu = time.perf_counter() - clock[0], time.process_time() - clock[1]
    table = summary_table(runs)
    summary = {
        "provenance": "simulated",
        "description": __doc__.split("\n\n")[0],
        "settings": {
            "seeds": [1, args.seeds],
            "fit_seed": FIT_SEED,
            "noise_stream": NOISE_STREAM,
            "noise": "one N(0, 1) value per study, independent of everything simulated",
            "control": CONTROL,
            "engine": "exact",
            "r2_draws_per_fit": R2_N_DRAWS,
            "min_k": MIN_K,
            "min_k_shown_in_report": MIN_K_SUBGROUPS,
            "lower_bound": LOWER_BOUND,
            "large_r2": LARGE_R2,
            "k_bands": {name: list(b) for name, b in K_BANDS.items()},
        },
        "runtime": {"seconds": round(seconds, 1), "cpu_seconds_main_process": round(cpu, 1)},
        "n_rows": len(runs),
        "k_counts": {str(k): int(n) for k, n in runs[runs["is_noise"]]["k"].value_counts().sort_index().items()},
        "summary": table.to_dict(orient="records"),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "subgroup_r2.csv", runs.assign(provenance="simulated"))
    write_json(args.out_dir / "subgroup_r2.json", summary)
    _print_summary(table)
    print(
        f"{args.seeds} seeds, {len(runs)} fits in {seconds / 60:.1f} min ({cpu / 60:.1f} CPU-min); "
        f"wrote {args.out_dir / 'subgroup_r2.csv'} and {args.out_dir / 'subgroup_r2.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
