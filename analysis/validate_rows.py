"""Checks of the data rows: ``arms.csv`` (arm-level summaries) and ``effects.csv`` (precomputed effects)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.problems import Problem
from analysis.rawdata import ARMS_NAME, EFFECTS_NAME, csv_line, numeric_cells, parse_integer, parse_number
from analysis.smd import hedges_g, sd_from_sem

ROLES = ("treatment", "control", "sham")
ARMS_REQUIRED = ("study", "arm", "role", "outcome", "mean", "n")
EFFECTS_REQUIRED = ("study", "outcome", "yi")
#: |g| above which a comparison is flagged as suspicious (metafor's escalc check uses the same idea).
LARGE_G = 2.0
#: An arm whose CV is below this fraction of the outcome's median CV has SEM-sized dispersion:
#: SEM/SD = 1/sqrt(n) <= 0.41 for n >= 6 animals, while genuine SDs of one outcome rarely differ
#: that much between studies (a ratio of 0.5 flagged a genuine SD in normand1999).
SEM_SIZED_CV_RATIO = 0.4


def _missing_columns(frame: pd.DataFrame, file: str, required: tuple[str, ...]) -> list[Problem]:
    return [Problem("error", file, 1, c, "required column missing") for c in required if c not in frame.columns]


def _check_id_cells(
    frame: pd.DataFrame, file: str, study_ids: set[str] | None, outcome_ids: set[str] | None
) -> list[Problem]:
    problems = []
    for idx, row in frame.iterrows():
        line = csv_line(idx)
        if row["study"] == "":
            problems.append(Problem("error", file, line, "study", "missing study id"))
        elif study_ids is not None and row["study"] not in study_ids:
            problems.append(Problem("error", file, line, "study", f"study {row['study']!r} is not in studies.csv"))
        if row["outcome"] == "":
            problems.append(Problem("error", file, line, "outcome", "missing outcome id"))
        elif outcome_ids is not None and row["outcome"] not in outcome_ids:
            problems.append(
                Problem("error", file, line, "outcome", f"outcome {row['outcome']!r} is not declared in dataset.toml")
            )
    return problems


def _check_positive(frame: pd.DataFrame, file: str, col: str, idx: int) -> Problem | None:
    value = frame.at[idx, col]
    number = parse_number(value)
    if number is None:
        return Problem("error", file, csv_line(idx), col, f"not a finite number: {value!r}")
    if number <= 0:
        return Problem("error", file, csv_line(idx), col, f"must be > 0, got {value}")
    return None


def _check_exactly_one(frame: pd.DataFrame, file: str, cols: tuple[str, str]) -> list[Problem]:
    """Exactly one of two dispersion columns per row, and it must be a positive number."""
    present = [c for c in cols if c in frame.columns]
    if not present:
        return [Problem("error", file, 1, "/".join(cols), f"one of the columns {' or '.join(cols)} is required")]
    problems = []
    for idx in frame.index:
        given = [c for c in present if frame.at[idx, c] != ""]
        if len(given) != 1:
            what = "both" if given else "neither"
            problems.append(Problem("error", file, csv_line(idx), "/".join(cols), f"give exactly one of {cols[0]}/{cols[1]} ({what} given)"))
        else:
            bad = _check_positive(frame, file, given[0], idx)
            problems += [bad] if bad else []
    return problems


def _check_duplicates(frame: pd.DataFrame, file: str, key: list[str]) -> list[Problem]:
    dup = frame.duplicated(subset=key, keep="first")
    return [
        Problem("error", file, csv_line(idx), ",".join(key), f"duplicated row for {tuple(frame.loc[idx, key])}")
        for idx in frame.index[dup]
    ]


def check_arms(arms: pd.DataFrame, study_ids: set[str] | None, outcome_ids: set[str] | None) -> list[Problem]:
    """Check every row of ``arms.csv`` and the treatment–control structure of each study."""
    problems = _missing_columns(arms, ARMS_NAME, ARMS_REQUIRED)
    if problems:
        return problems
    problems += _check_id_cells(arms, ARMS_NAME, study_ids, outcome_ids)
    for idx, row in arms.iterrows():
        line = csv_line(idx)
        if row["arm"] == "":
            problems.append(Problem("error", ARMS_NAME, line, "arm", "missing arm id"))
        if row["role"] not in ROLES:
            problems.append(Problem("error", ARMS_NAME, line, "role", f"role must be one of {', '.join(ROLES)}, got {row['role']!r}"))
        if parse_number(row["mean"]) is None:
            problems.append(Problem("error", ARMS_NAME, line, "mean", f"not a finite number: {row['mean']!r}"))
        n = parse_integer(row["n"])
        if n is None:
            problems.append(Problem("error", ARMS_NAME, line, "n", f"not a whole number: {row['n']!r}"))
        elif n < 2:
            problems.append(Problem("error", ARMS_NAME, line, "n", f"n must be at least 2, got {n}"))
    problems += _check_exactly_one(arms, ARMS_NAME, ("sd", "sem"))
    problems += _check_duplicates(arms, ARMS_NAME, ["study", "arm", "outcome"])
    problems += _check_controls(arms)
    return problems


def _check_controls(arms: pd.DataFrame) -> list[Problem]:
    """Each treatment row needs a control row of the same study and outcome to compare with."""
    problems = []
    has_control_col = "control_arm" in arms.columns
    for idx, row in arms[arms["role"] == "treatment"].iterrows():
        same = arms[(arms["study"] == row["study"]) & (arms["outcome"] == row["outcome"])]
        controls = set(same.loc[same["role"] == "control", "arm"])
        named = row["control_arm"] if has_control_col else ""
        line = csv_line(idx)
        if named and named not in controls:
            problems.append(Problem("error", ARMS_NAME, line, "control_arm", f"control arm {named!r} has no control row for outcome {row['outcome']!r}"))
        elif not named and not controls:
            problems.append(Problem("error", ARMS_NAME, line, "role", f"treatment arm {row['arm']!r} has no control arm for outcome {row['outcome']!r}"))
        elif not named and len(controls) > 1:
            problems.append(Problem("error", ARMS_NAME, line, "control_arm", f"study has several control arms {sorted(controls)}: name one in control_arm"))
    return problems


def check_effects(effects: pd.DataFrame, study_ids: set[str] | None, outcome_ids: set[str] | None) -> list[Problem]:
    """Check every row of ``effects.csv``."""
    problems = _missing_columns(effects, EFFECTS_NAME, EFFECTS_REQUIRED)
    if problems:
        return problems
    problems += _check_id_cells(effects, EFFECTS_NAME, study_ids, outcome_ids)
    for idx, value in effects["yi"].items():
        if parse_number(value) is None:
            problems.append(Problem("error", EFFECTS_NAME, csv_line(idx), "yi", f"not a finite number: {value!r}"))
    problems += _check_exactly_one(effects, EFFECTS_NAME, ("vi", "sei"))
    for col in ("n_treatment", "n_control"):
        if col in effects.columns:
            for idx, value in effects[col].items():
                n = parse_integer(value)
                if value != "" and (n is None or n < 2):
                    problems.append(Problem("error", EFFECTS_NAME, csv_line(idx), col, f"must be a whole number >= 2, got {value!r}"))
    key = ["study", "outcome"] + (["comparison"] if "comparison" in effects.columns else [])
    problems += _check_duplicates(effects, EFFECTS_NAME, key)
    return problems


def suspicious_arms(arms: pd.DataFrame) -> list[Problem]:
    """Warnings for legal but suspicious arm summaries (run only on rows that passed the checks).

    * SD larger than a positive mean (implausible for a positive bone measure);
    * |g| > 2 while both arms' "SD"s are SEM-sized: their coefficient of variation is below
      0.4 times the median CV of the same outcome across the dataset (an SEM is SD/sqrt(n), i.e.
      2.4-3.2 times smaller at n = 6-10). Such an SD may be an SEM, which inflates g by sqrt(n).
      Needs at least three studies reporting the outcome.
    """
    sd = _sd_column(arms)
    mean = numeric_cells(arms, "mean")
    problems = [
        Problem("warning", ARMS_NAME, csv_line(idx), "sd" if arms.at[idx, "sd"] else "sem",
                f"SD ({sd[idx]:.4g}) larger than the positive mean ({mean[i]:.4g})")
        for i, idx in enumerate(arms.index)
        if mean[i] > 0 and sd[idx] > mean[i]
    ]
    cv = pd.Series(np.where(mean != 0, sd.to_numpy() / np.abs(np.where(mean != 0, mean, 1.0)), np.inf), index=arms.index)
    for idx, row in arms[arms["role"] == "treatment"].iterrows():
        same_outcome = arms["outcome"] == row["outcome"]
        ctrl = _control_index(arms, row)
        if ctrl is None or arms.loc[same_outcome, "study"].nunique() < 3:
            continue
        g, _ = hedges_g(mean[arms.index.get_loc(idx)], sd[idx], int(float(row["n"])),
                        mean[arms.index.get_loc(ctrl)], sd[ctrl], int(float(arms.at[ctrl, "n"])))
        threshold = SEM_SIZED_CV_RATIO * float(np.median(cv[same_outcome]))
        if abs(g) > LARGE_G and max(cv[idx], cv[ctrl]) < threshold:
            problems.append(Problem("warning", ARMS_NAME, csv_line(idx), "sd" if row.get("sd", "") else "sem",
                                    f"|g| = {abs(float(g)):.2f} > {LARGE_G:g} with SEM-sized dispersion (CV below {SEM_SIZED_CV_RATIO:g} x the "
                                    f"outcome's median CV {threshold / SEM_SIZED_CV_RATIO:.3g}): check the SD is not an SEM"))
    return problems


def _sd_column(arms: pd.DataFrame) -> pd.Series:
    """Standard deviation per row, converting SEM to SD (rows must already be valid)."""
    sd, sem = numeric_cells(arms, "sd"), numeric_cells(arms, "sem")
    return pd.Series(np.where(np.isnan(sd), sd_from_sem(sem, numeric_cells(arms, "n")), sd), index=arms.index)


def _control_index(arms: pd.DataFrame, row: pd.Series) -> int | None:
    same = arms[(arms["study"] == row["study"]) & (arms["outcome"] == row["outcome"]) & (arms["role"] == "control")]
    named = row.get("control_arm", "")
    if named:
        same = same[same["arm"] == named]
    return same.index[0] if len(same) == 1 else None
