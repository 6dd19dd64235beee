"""Simulate the flagship dataset ``bmsc_ev_osteoporosis`` animal by animal, and write it.

The dataset is a labelled, design-matched SIMULATION of Zhang et al. (PLoS One 2025, e0327011);
the design and true parameters live in :mod:`analysis.dataset.simulate_design`. Animals, not effect
sizes, are simulated:

1. true study SMDs ``delta_ik = mu_k + d_k c_i + u_ik`` (centred moderators, correlated ``u_i``);
2. per study, lab-specific OVX/sham means and within-group SDs; per animal, all seven outcomes
   drawn jointly (within-animal correlation), EV arms shifted by ``delta`` within-group SDs;
3. arm summaries (mean and SD, or SEM for SEM-reporting studies) rounded to 4 significant
   digits, only for the outcomes the study reports; planned Tb.N is dropped with high
   probability when the study's own t-test of the first EV arm vs control is not significant.

Examples
--------
>>> from pathlib import Path
>>> from analysis.dataset.simulate import simulate_dataset, write_dataset
>>> write_dataset(simulate_dataset(), Path("data/bmsc_ev_osteoporosis"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.atomic import staged_directory, write_text_atomic
from analysis.dataset import simulate_design as D
from analysis.dataset.simulate_design import DEFAULT_SEED

__all__ = ["DEFAULT_SEED", "SimulatedDataset", "simulate_dataset", "write_dataset"]

FILES = ("dataset.toml", "studies.csv", "arms.csv", "truth.json")
ARM_COLUMNS = ["study", "arm", "role", "outcome", "mean", "sd", "sem", "n", "control_arm", "unit", "site", "source"]
SIG_DIGITS = 4
_K = len(D.OUTCOMES)
_DIR = np.array([D.DIRECTION[k] for k in D.OUTCOMES], dtype=float)


@dataclass(frozen=True, eq=False)
class SimulatedDataset:
    """An in-memory simulated dataset: the four files of a dataset folder.

    Attributes
    ----------
    toml_text : str
        Contents of ``dataset.toml``.
    studies : pandas.DataFrame
        ``studies.csv``: one row per study (moderators and SYRCLE risk of bias).
    arms : pandas.DataFrame
        ``arms.csv``: one row per arm and reported outcome.
    truth : dict
        Contents of ``truth.json``: the true parameters and study effects.
    """

    toml_text: str
    studies: pd.DataFrame
    arms: pd.DataFrame
    truth: dict


def simulate_dataset(
    seed: int = DEFAULT_SEED, *, omit_probability: float = D.SELECTION_OMIT_PROB, effects_df: float | None = None
) -> SimulatedDataset:
    """Simulate the design-matched BMSC-EV osteoporosis dataset (pure, in memory).

    Parameters
    ----------
    seed : int, default DEFAULT_SEED
        Seed of ``numpy.random.default_rng``, the only source of randomness.
    omit_probability : float, default SELECTION_OMIT_PROB
        Probability that a planned, non-significant Tb.N result is left out. The omission
        uniform is drawn either way, so 0 gives the same animals with every planned Tb.N
        result reported (the no-selection counterfactual of :mod:`analysis.studies.selection_power`).
    effects_df : float, optional
        Degrees of freedom of heavy-tailed (multivariate t) residual study effects with the same
        covariance as the normal ones (a misfit of the random-effects distribution, for
        :mod:`analysis.studies.calibration`); None (default) keeps them normal and the dataset
        unchanged.

    Returns
    -------
    SimulatedDataset
        Same seed, same dataset (and byte-identical files from :func:`write_dataset`).
    """
    rng = np.random.default_rng(seed)
    design = D.design_rows()
    contrib, mod_info = _moderator_contributions(design)
    delta = _study_effects(rng, contrib, effects_df)
    l_within = np.linalg.cholesky(np.array(D.R_WITHIN))
    arm_rows, selection, arm_effects = [], {}, {}
    for i, study in enumerate(design):
        animals, arm_delta = _simulate_animals(rng, study, delta[i], l_within)
        selection[study["study"]] = _tbn_selection(rng, study, animals, omit_probability)
        reported = [
            k for k in study["outcomes"] if not (k == D.SELECTION_OUTCOME and selection[study["study"]]["omitted"])
        ]
        arm_rows += _summary_rows(study, animals, reported)
        arm_effects[study["study"]] = arm_delta
    truth = _truth(seed, design, delta, contrib, mod_info, arm_effects, selection, omit_probability)
    return SimulatedDataset(
        _toml_text(seed), _studies_frame(design), pd.DataFrame(arm_rows, columns=ARM_COLUMNS), truth
    )


def _moderator_contributions(design: list[dict]) -> tuple[np.ndarray, dict]:
    """Centred moderator contributions c_i (benefit scale) and their coding for truth.json."""
    contrib = np.zeros(len(design))
    info: dict = {}
    for name, effects in D.CATEGORICAL_EFFECTS.items():
        values = [s[name] for s in design]
        levels = D.MODERATOR_LEVELS[name]
        shares = {lev: values.count(lev) / len(values) for lev in levels}
        for lev, beta in effects.items():
            contrib += beta * (np.array([v == lev for v in values], dtype=float) - shares[lev])
        info[name] = {
            "type": "categorical",
            "reference": levels[0],
            "effect": dict(effects),
            "population_share": shares,
        }
    for name, beta in D.NUMERIC_EFFECTS.items():
        x = np.array([s[name] for s in design], dtype=float)
        contrib += beta * (x - x.mean())
        info[name] = {"type": "numeric", "per_unit": beta, "centre": float(x.mean())}
    return contrib, info


def _study_effects(rng: np.random.Generator, contrib: np.ndarray, effects_df: float | None = None) -> np.ndarray:
    """True study SMDs delta (studies x outcomes, natural sign); multivariate t residuals given ``effects_df``."""
    tau_r = np.array([D.TAU_RESIDUAL[k] for k in D.OUTCOMES])
    corr = np.outer(_DIR, _DIR) * np.array(D.R_BETWEEN_BENEFIT)
    chol = np.linalg.cholesky(np.outer(tau_r, tau_r) * corr)
    u = rng.standard_normal((len(contrib), _K)) @ chol.T
    if effects_df is not None:  # scale mixture of normals, rescaled to the normal covariance
        if effects_df <= 2:
            raise ValueError(f"effects_df must exceed 2 (finite variance), got {effects_df}")
        u *= np.sqrt((effects_df - 2.0) / rng.chisquare(effects_df, size=(len(contrib), 1)))
    mu = np.array([D.MU[k] for k in D.OUTCOMES])
    return mu + np.outer(contrib, _DIR) + u


def _study_scale(study: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Sham mean, OVX mean and within-group SD per outcome (study units), units and sites."""
    bone = D.BASELINES[(study["species"], "bone")]
    table = {"BMD": D.BASELINES[(study["species"], study["bmd_method"])]["BMD"], **bone}
    base = np.array([table[k] for k in D.OUTCOMES], dtype=float)
    units, sites = [], []
    for j, k in enumerate(D.OUTCOMES):
        if k in D.LENGTH_OUTCOMES and study["length_unit"] == "mm":
            base[j] /= 1000.0
        units.append(D.BMD_UNITS[study["bmd_method"]] if k == "BMD" else D.FIXED_UNITS.get(k, study["length_unit"]))
        cortical = k in ("Ct_Th", "ultimate_load")
        dxa = k == "BMD" and study["bmd_method"] == "DXA"
        sites.append(D.CORTICAL_SITE if cortical else D.DXA_SITE if dxa else study["site"])
    return base[:, 0], base[:, 1], base[:, 2], units, sites


def _simulate_animals(
    rng: np.random.Generator, study: dict, delta_i: np.ndarray, l_within: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Animal-level values (arm -> n x outcomes) of one study, and each EV arm's true SMDs."""
    sham, ovx, sd = _study_scale(study)[:3]
    level = np.exp(D.LEVEL_JITTER * rng.standard_normal(_K))
    sigma = sd * np.exp(D.SD_JITTER * rng.standard_normal(_K))
    offsets = {"ev": 0.0, "ev_low": -D.DOSE_OFFSET, "ev_high": D.DOSE_OFFSET}
    animals, arm_delta = {}, {}
    for arm, role, n in study["arms"]:
        if role == "treatment":
            d_arm = delta_i + offsets[arm] * _DIR
            arm_delta[arm] = {k: _r6(v) for k, v in zip(D.OUTCOMES, d_arm, strict=True)}
            centre = ovx * level + d_arm * sigma
        else:
            centre = (sham if role == "sham" else ovx) * level
        animals[arm] = centre + sigma * (rng.standard_normal((n, _K)) @ l_within.T)
    return animals, arm_delta


def _tbn_selection(
    rng: np.random.Generator, study: dict, animals: dict[str, np.ndarray], omit_probability: float
) -> dict:
    """Outcome-reporting selection for Tb.N, decided on the study's own t-test."""
    j = D.OUTCOMES.index(D.SELECTION_OUTCOME)
    first_ev = study["arms"][2][0]
    p = float(stats.ttest_ind(animals[first_ev][:, j], animals["ovx"][:, j]).pvalue)
    draw = float(rng.uniform())
    planned = D.SELECTION_OUTCOME in study["outcomes"]
    omitted = planned and p > D.SELECTION_ALPHA and draw < omit_probability
    return {"planned": planned, "p_value": _r6(p), "omitted": bool(omitted), "compared_arm": first_ev}


def _round_sig(x: float, digits: int = SIG_DIGITS) -> float:
    """Round to ``digits`` significant digits, as printed in a paper table."""
    return float(np.format_float_positional(x, precision=digits, fractional=False, unique=True))


def _r6(x: float) -> float:
    return round(float(x), 6)


def _summary_rows(study: dict, animals: dict[str, np.ndarray], reported: list[str]) -> list[dict]:
    """arms.csv rows of one study: arm summaries for each reported outcome."""
    units, sites = _study_scale(study)[3:]
    rows = []
    for k in reported:
        j = D.OUTCOMES.index(k)
        for arm, role, n in study["arms"]:
            values = animals[arm][:, j]
            sd = float(values.std(ddof=1))
            use_sem = study["dispersion"] == "sem"
            rows.append(
                {
                    "study": study["study"],
                    "arm": arm,
                    "role": role,
                    "outcome": k,
                    "mean": _round_sig(values.mean()),
                    "sd": np.nan if use_sem else _round_sig(sd),
                    "sem": _round_sig(sd / np.sqrt(n)) if use_sem else np.nan,
                    "n": n,
                    "control_arm": "ovx" if role == "treatment" else None,
                    "unit": units[j],
                    "site": sites[j],
                    "source": "simulated",
                }
            )
    return rows


def _studies_frame(design: list[dict]) -> pd.DataFrame:
    """studies.csv: moderators and SYRCLE risk-of-bias judgements."""
    cols = ["study", "species", "engineered", "injections_per_week", "duration_weeks"]
    rows = [{**{c: s[c] for c in cols}, **{f"rob_{d}": s["rob"][d] for d in D.ROB_DOMAINS}} for s in design]
    return pd.DataFrame(rows, columns=cols + [f"rob_{d}" for d in D.ROB_DOMAINS])


def _matrix(mat: np.ndarray) -> dict:
    return {"outcomes": list(D.OUTCOMES), "matrix": [[_r6(v) for v in row] for row in mat]}


def _truth(
    seed: int,
    design: list[dict],
    delta: np.ndarray,
    contrib: np.ndarray,
    mod_info: dict,
    arm_effects: dict,
    selection: dict,
    omit_probability: float,
) -> dict:
    """Assemble truth.json (plain Python types only)."""
    var_mod = float(np.mean(contrib**2))
    tau_r = np.array([D.TAU_RESIDUAL[k] for k in D.OUTCOMES])
    tau_m = np.sqrt(tau_r**2 + var_mod)
    r_resid = np.outer(_DIR, _DIR) * np.array(D.R_BETWEEN_BENEFIT)
    r_marg = (var_mod * np.outer(_DIR, _DIR) + np.outer(tau_r, tau_r) * r_resid) / np.outer(tau_m, tau_m)
    ids = [s["study"] for s in design]
    coef = {f"{n}[{lev}]": b for n, e in D.CATEGORICAL_EFFECTS.items() for lev, b in e.items()} | D.NUMERIC_EFFECTS
    return {
        "note": D.NOTE,
        "seed": seed,
        "generator": D.GENERATOR,
        "dataset": D.NAME,
        "provenance": "simulated",
        "effect_definition": (
            "delta_ik = (true EV-arm mean - true OVX-control mean) / true within-group SD of study i, natural "
            "sign; delta_ik = mu_k + direction_k * c_i + u_ik, c_i = centred moderator contribution (benefit scale)."
        ),
        "n_studies": len(design),
        "n_animals": int(sum(n for s in design for _, _, n in s["arms"])),
        "outcomes": list(D.OUTCOMES),
        "direction": dict(D.DIRECTION),
        "mu": dict(D.MU),
        "tau": {k: _r6(t) for k, t in zip(D.OUTCOMES, tau_m, strict=True)},
        "tau_residual": dict(D.TAU_RESIDUAL),
        "moderator_variance": _r6(var_mod),
        "moderators": mod_info,
        "moderator_scale": (
            "benefit: the natural-sign effect on outcome k is direction_k * effect (see moderators_by_outcome)"
        ),
        "moderator_coding": (
            "c_i = sum of effect * (indicator - population_share) over non-reference levels plus "
            "per_unit * (value - centre) over numeric moderators; population = the 10 design studies, "
            "so c_i averages to 0 and mu is the marginal mean; meta-regression slopes equal the effects"
        ),
        "moderators_by_outcome": {k: {c: _r6(D.DIRECTION[k] * b) for c, b in coef.items()} for k in D.OUTCOMES},
        "between_study_correlation": {**_matrix(r_resid), "scope": "residual u_i, natural sign"},
        "between_study_correlation_marginal": {**_matrix(r_marg), "scope": "marginal delta_i (moderators integrated)"},
        "within_animal_correlation": {**_matrix(np.array(D.R_WITHIN)), "scope": "animal level, natural sign"},
        "moderator_contributions": {sid: _r6(c) for sid, c in zip(ids, contrib, strict=True)},
        "study_effects": {
            sid: {k: _r6(v) for k, v in zip(D.OUTCOMES, row, strict=True)} for sid, row in zip(ids, delta, strict=True)
        },
        "arm_effects": arm_effects,
        "dose_offset": D.DOSE_OFFSET,
        "selection": _selection_truth(selection, omit_probability),
    }


def _selection_truth(selection: dict, omit_probability: float) -> dict:
    return {
        "outcome": D.SELECTION_OUTCOME,
        "alpha": D.SELECTION_ALPHA,
        "omit_probability_if_nonsignificant": omit_probability,
        "rule": (
            f"planned Tb_N is omitted with probability {omit_probability:g} "
            "when the two-sided pooled-variance t-test of "
            f"the first EV arm vs the OVX control on the simulated animals has p > {D.SELECTION_ALPHA:g}; significant "
            "results are always reported"
        ),
        "omitted_studies": [s for s, r in selection.items() if r["omitted"]],
        "not_planned_studies": [s for s, r in selection.items() if not r["planned"]],
        "studies": selection,
    }


def _toml_text(seed: int) -> str:
    """dataset.toml text (deterministic, hand-formatted; strings escaped as JSON, valid TOML)."""
    q = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731
    lines = [
        f"name = {q(D.NAME)}",
        f"title = {q(D.TITLE)}",
        'provenance = "simulated"',
        f"citation = {q(D.CITATION)}",
        'effect_measure = "SMD"',
        f"seed = {seed}",
        f"generator = {q(D.GENERATOR)}",
    ]
    for k, (label, unit, direction) in D.OUTCOME_META.items():
        lines += ["", f"[outcomes.{k}]", f"label = {q(label)}", f"unit = {q(unit)}", f"direction = {direction}"]
    for name, levels in D.MODERATOR_LEVELS.items():
        lines += [
            "",
            f"[moderators.{name}]",
            'type = "categorical"',
            f"reference = {q(levels[0])}",
            "levels = [" + ", ".join(q(v) for v in levels) + "]",
        ]
    for name in D.NUMERIC_EFFECTS:
        lines += ["", f"[moderators.{name}]", 'type = "numeric"']
    return "\n".join(lines) + "\n"


def _format_float(x: float) -> str:
    return (
        ""
        if pd.isna(x)
        else np.format_float_positional(x, precision=SIG_DIGITS, fractional=False, unique=True, trim="-")
    )


def _csv_text(frame: pd.DataFrame) -> str:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(_format_float)
    return out.to_csv(index=False, lineterminator="\n")


def _serialise(sim: SimulatedDataset) -> dict[str, str]:
    """File name -> text for every file of the dataset folder."""
    return {
        "dataset.toml": sim.toml_text,
        "studies.csv": _csv_text(sim.studies),
        "arms.csv": _csv_text(sim.arms),
        "truth.json": json.dumps(sim.truth, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
    }


def write_dataset(sim: SimulatedDataset, out_dir: Path, *, overwrite: bool = False) -> Path:
    """Write a simulated dataset folder atomically.

    The folder is built in a temporary sibling directory (each file itself written atomically)
    and renamed into place, so a failure never leaves a half-written dataset.

    Parameters
    ----------
    sim : SimulatedDataset
        Output of :func:`simulate_dataset`.
    out_dir : pathlib.Path
        Dataset folder to create, e.g. ``data/bmsc_ev_osteoporosis``; parents are created.
    overwrite : bool, default False
        Replace an existing non-empty folder (an empty folder is always replaced).

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        ``out_dir`` is a non-empty folder and ``overwrite`` is False, or is not a folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
    texts = _serialise(sim)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(out_dir) as staging:
        for name in FILES:
            write_text_atomic(staging / name, texts[name])
    return out_dir
