"""Checks of the data rows: ``arms.csv`` (arm-level summaries) and ``effects.csv`` (precomputed effects)."""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd

from analysis.dataset.measures import DEFAULT_CI_LEVEL, LINE_COLUMN, sei_from_ci
from analysis.dataset.problems import Problem, errors
from analysis.dataset.read import (
    ARMS_NAME,
    EFFECTS_NAME,
    STUDIES_NAME,
    TOML_NAME,
    RawDataset,
    csv_line,
    header_line,
    numeric_cells,
    parse_integer,
    parse_number,
)
from analysis.dataset.smd import hedges_g, pooled_sd, sd_from_sem

ROLES = ("treatment", "control", "sham")
ARMS_REQUIRED = ("study", "arm", "role", "outcome", "mean", "n")
EFFECTS_REQUIRED = ("study", "outcome", "yi")
#: |g| above which a comparison is flagged as suspicious (metafor's escalc check uses the same idea).
LARGE_G = 2.0
#: An arm whose CV is below this fraction of the outcome's median CV has SEM-sized dispersion:
#: SEM/SD = 1/sqrt(n) <= 0.41 for n >= 6 animals, while genuine SDs of one outcome rarely differ
#: that much between studies (a ratio of 0.5 flagged a genuine SD in normand1999).
SEM_SIZED_CV_RATIO = 0.4
#: Largest group size accepted: a larger ``n`` in an animal study is a typo (e.g. a mean pasted into n).
MAX_N = 1_000_000
#: Bounds of a confidence interval given in ``effects.csv`` in place of ``vi``/``sei``.
CI_COLUMNS = ("ci_lower", "ci_upper")
#: A CI is flagged as asymmetric around ``yi`` when its two half-widths differ by more than the
#: rounding of the printed decimals plus this fraction of the half-width. Intervals of a normal
#: estimate are symmetric; a real asymmetry means the interval was computed on another scale
#: (e.g. a ratio's CI reported on the ratio scale while ``yi`` is a log ratio). 1% of the
#: half-width changes sei by at most 1% (vi by 2%), far below the uncertainty of vi itself in
#: animal studies of 6-10 animals per group, so smaller differences are not worth a warning.
CI_ASYMMETRY_REL = 0.01


def _missing_columns(frame: pd.DataFrame, file: str, required: tuple[str, ...]) -> list[Problem]:
    line = header_line(frame)
    problems = [
        Problem("error", file, line, c, "required column missing" + _case_hint(c, frame.columns))
        for c in required
        if c not in frame.columns
    ]
    if not problems and frame.empty:
        problems.append(Problem("error", file, None, None, "no data rows (only a header)"))
    return problems


def _case_hint(name: str, columns: pd.Index) -> str:
    """A hint when a required column is present with other letter case (e.g. ``Study``)."""
    found = [c for c in columns if c.lower() == name.lower()]
    return f" (found {found[0]!r}: column names are case-sensitive)" if found else ""


def _unicode_hint(value: str, known: set[str]) -> str:
    """A hint when an id differs from a known one only in Unicode normalisation (e.g. a decomposed ü)."""
    nfc = unicodedata.normalize("NFC", value)
    same = [k for k in known if unicodedata.normalize("NFC", k) == nfc]
    return f" (it differs from {same[0]!r} only in its Unicode encoding: retype one of them)" if same else ""


def _check_count(value: str, file: str, idx: int, col: str) -> Problem | None:
    """A group size: a whole number from 2 to :data:`MAX_N`."""
    n = parse_integer(value)
    if n is None:
        return Problem("error", file, csv_line(idx), col, f"not a whole number: {value!r}")
    if n < 2:
        return Problem("error", file, csv_line(idx), col, f"{col} must be at least 2, got {n}")
    if n > MAX_N:
        return Problem("error", file, csv_line(idx), col, f"{col} = {value} is implausibly large (more than {MAX_N:,})")
    return None


def _check_id_cells(
    frame: pd.DataFrame, file: str, study_ids: set[str] | None, outcome_ids: set[str] | None
) -> list[Problem]:
    problems = []
    for idx, row in _records(frame):
        line = csv_line(idx)
        if row["study"] == "":
            problems.append(Problem("error", file, line, "study", "missing study id"))
        elif study_ids is not None and row["study"] not in study_ids:
            problems.append(
                Problem(
                    "error",
                    file,
                    line,
                    "study",
                    f"study {row['study']!r} is not in studies.csv" + _unicode_hint(row["study"], study_ids),
                )
            )
        if row["outcome"] == "":
            problems.append(Problem("error", file, line, "outcome", "missing outcome id"))
        elif outcome_ids is not None and row["outcome"] not in outcome_ids:
            problems.append(
                Problem("error", file, line, "outcome", f"outcome {row['outcome']!r} is not declared in dataset.toml")
            )
    return problems


def _check_positive(value: str, file: str, col: str, idx: int) -> Problem | None:
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
        return [
            Problem(
                "error", file, header_line(frame), "/".join(cols), f"one of the columns {' or '.join(cols)} is required"
            )
        ]
    problems = []
    for idx, row in _records(frame[present]):
        given = [c for c in present if row[c] != ""]
        if len(given) != 1:
            what = "both" if given else "neither"
            problems.append(
                Problem(
                    "error",
                    file,
                    csv_line(idx),
                    "/".join(cols),
                    f"give exactly one of {cols[0]}/{cols[1]} ({what} given)",
                )
            )
        else:
            bad = _check_positive(row[given[0]], file, given[0], idx)
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
    for idx, row in _records(arms):
        line = csv_line(idx)
        if row["arm"] == "":
            problems.append(Problem("error", ARMS_NAME, line, "arm", "missing arm id"))
        if row["role"] not in ROLES:
            problems.append(
                Problem(
                    "error", ARMS_NAME, line, "role", f"role must be one of {', '.join(ROLES)}, got {row['role']!r}"
                )
            )
        if parse_number(row["mean"]) is None:
            problems.append(Problem("error", ARMS_NAME, line, "mean", f"not a finite number: {row['mean']!r}"))
        bad_n = _check_count(row["n"], ARMS_NAME, idx, "n")
        problems += [bad_n] if bad_n else []
    problems += _check_exactly_one(arms, ARMS_NAME, ("sd", "sem"))
    problems += _check_duplicates(arms, ARMS_NAME, ["study", "arm", "outcome"])
    problems += _check_controls(arms)
    if not errors(problems):
        problems += _check_comparisons(arms)
    return problems


def _check_comparisons(arms: pd.DataFrame) -> list[Problem]:
    """Errors for valid-looking cells whose SD or effect size over/underflows double precision.

    E.g. ``sem = 1e300`` (SD = SEM·sqrt(n) is infinite), ``sd = 1e-200`` (the pooled variance
    underflows to 0) or means of opposite sign near 1e308 (their difference overflows). Run
    only when every cell passed the row checks.
    """
    sd, mean, n = _sd_column(arms), _by_index(arms, "mean"), _by_index(arms, "n")
    problems = [
        Problem(
            "error",
            ARMS_NAME,
            csv_line(idx),
            _dispersion_col(arms, idx),
            "the standard deviation (SEM·sqrt(n) if an SEM was given) is not a finite positive double",
        )
        for idx in arms.index
        if not (np.isfinite(sd[idx]) and sd[idx] > 0)
    ]
    if problems:
        return problems
    for idx, ctrl in _comparisons(arms).items():
        with np.errstate(all="ignore"):
            sp = pooled_sd(sd[idx], n[idx], sd[ctrl], n[ctrl])
            g, v = hedges_g(mean[idx], sd[idx], n[idx], mean[ctrl], sd[ctrl], n[ctrl])
        if not (np.isfinite(sp) and sp > 0 and np.isfinite(g) and np.isfinite(v)):
            problems.append(
                Problem(
                    "error",
                    ARMS_NAME,
                    csv_line(idx),
                    "mean",
                    f"the comparison with control arm {arms.at[ctrl, 'arm']!r} gives no finite effect size: "
                    "the means or SDs are too large or too small for double precision",
                )
            )
    return problems


def _check_controls(arms: pd.DataFrame) -> list[Problem]:
    """Each treatment row needs a control row of the same study and outcome to compare with."""
    problems = []
    by_group = _control_rows(arms)
    for idx, row in _records(arms[arms["role"] == "treatment"]):
        controls = set(by_group.get((row["study"], row["outcome"]), {}))
        named = row.get("control_arm", "")
        line = csv_line(idx)
        if named and named not in controls:
            problems.append(
                Problem(
                    "error",
                    ARMS_NAME,
                    line,
                    "control_arm",
                    f"control arm {named!r} has no control row for outcome {row['outcome']!r}",
                )
            )
        elif not named and not controls:
            problems.append(
                Problem(
                    "error",
                    ARMS_NAME,
                    line,
                    "role",
                    f"treatment arm {row['arm']!r} has no control arm for outcome {row['outcome']!r}",
                )
            )
        elif not named and len(controls) > 1:
            problems.append(
                Problem(
                    "error",
                    ARMS_NAME,
                    line,
                    "control_arm",
                    f"study has several control arms {sorted(controls)}: name one in control_arm",
                )
            )
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
    problems += _check_effect_precision(effects)
    if not errors(problems) and "sei" in effects.columns:
        sei = numeric_cells(effects, "sei")
        with np.errstate(all="ignore"):
            vi = sei**2
        problems += [
            Problem(
                "error",
                EFFECTS_NAME,
                csv_line(idx),
                "sei",
                f"sei = {effects.at[idx, 'sei']} gives a sampling variance sei² that is not a finite positive double",
            )
            for i, idx in enumerate(effects.index)
            if not np.isnan(sei[i]) and not (np.isfinite(vi[i]) and vi[i] > 0)
        ]
    for col in ("n_treatment", "n_control"):
        if col in effects.columns:
            for idx, value in effects[col].items():
                bad = None if value == "" else _check_count(value, EFFECTS_NAME, idx, col)
                problems += [bad] if bad else []
    key = ["study", "outcome"] + (["comparison"] if "comparison" in effects.columns else [])
    problems += _check_duplicates(effects, EFFECTS_NAME, key)
    return problems


def _check_effect_precision(effects: pd.DataFrame) -> list[Problem]:
    """Exactly one of ``vi``, ``sei`` or a confidence interval (``ci_lower``, ``ci_upper``, ``ci_level``) per row."""
    if not any(c in effects.columns for c in (*CI_COLUMNS, "ci_level")):
        return _check_exactly_one(effects, EFFECTS_NAME, ("vi", "sei"))
    missing = [c for c in CI_COLUMNS if c not in effects.columns]
    if missing:
        column, what = (
            ("ci_level", "ci_level has no") if len(missing) == 2 else (missing[0], f"{missing[0]} is missing:")
        )
        return [
            Problem(
                "error",
                EFFECTS_NAME,
                header_line(effects),
                column,
                f"{what} confidence interval: give both columns ci_lower and ci_upper",
            )
        ]
    given_cols = [c for c in ("vi", "sei") if c in effects.columns]
    label = "/".join([*given_cols, *CI_COLUMNS])
    problems = []
    for idx, row in _records(effects):
        given = [c for c in given_cols if row[c] != ""] + (["CI"] if row["ci_lower"] or row["ci_upper"] else [])
        if len(given) != 1:
            what = f"{' and '.join(given)} given" if given else "none given"
            message = f"give exactly one of {', '.join(given_cols + ['ci_lower/ci_upper'])} ({what})"
            problems.append(Problem("error", EFFECTS_NAME, csv_line(idx), label, message))
        elif given[0] == "CI":
            problems += _check_ci_row(row, idx)
        else:
            bad = _check_positive(row[given[0]], EFFECTS_NAME, given[0], idx)
            problems += [bad] if bad else []
            if row.get("ci_level", ""):
                problems.append(
                    Problem(
                        "warning",
                        EFFECTS_NAME,
                        csv_line(idx),
                        "ci_level",
                        f"ci_level is ignored: the row gives {given[0]}, not a confidence interval",
                    )
                )
    return problems


def _check_ci_row(row: dict, idx: int) -> list[Problem]:
    """A row's confidence interval: both bounds, lower < upper, level in (0, 1), yi inside, symmetric around yi."""
    line = csv_line(idx)
    problems = [
        Problem("error", EFFECTS_NAME, line, col, f"give both bounds of the confidence interval ({col} is empty)")
        if row[col] == ""
        else Problem("error", EFFECTS_NAME, line, col, f"not a finite number: {row[col]!r}")
        for col in CI_COLUMNS
        if parse_number(row[col]) is None
    ]
    level_text = row.get("ci_level", "")
    level = DEFAULT_CI_LEVEL if level_text == "" else parse_number(level_text)
    if level is None or not 0.0 < level < 1.0:
        problems.append(
            Problem(
                "error",
                EFFECTS_NAME,
                line,
                "ci_level",
                f"ci_level must be a number in (0, 1), e.g. 0.95 for a 95% interval; got {level_text!r}",
            )
        )
    if problems:
        return problems
    lower, upper = parse_number(row["ci_lower"]), parse_number(row["ci_upper"])
    if lower >= upper:
        return [
            Problem(
                "error",
                EFFECTS_NAME,
                line,
                "ci_lower",
                f"ci_lower ({row['ci_lower']}) must be below ci_upper ({row['ci_upper']})",
            )
        ]
    with np.errstate(all="ignore"):
        vi = float(sei_from_ci(lower, upper, level)) ** 2
    if not (np.isfinite(vi) and vi > 0):
        return [
            Problem(
                "error",
                EFFECTS_NAME,
                line,
                "ci_lower",
                "the interval gives a sampling variance ((ci_upper - ci_lower) / (2 z))² that is not a finite "
                "positive double",
            )
        ]
    yi = parse_number(row["yi"])
    if yi is None:  # reported by the yi check
        return []
    if not lower <= yi <= upper:
        return [
            Problem(
                "error",
                EFFECTS_NAME,
                line,
                "yi",
                f"yi = {row['yi']} lies outside its confidence interval [{row['ci_lower']}, {row['ci_upper']}]",
            )
        ]
    return _ci_symmetry(row, line, yi, lower, upper)


def _ci_symmetry(row: dict, line: int, yi: float, lower: float, upper: float) -> list[Problem]:
    """A warning when the interval is not symmetric around yi beyond rounding (see :data:`CI_ASYMMETRY_REL`)."""
    below, above = yi - lower, upper - yi
    # |below - above| = |2 yi - lower - upper|: each printed number is off by at most half a unit of its last digit
    rounding = 10.0 ** -_decimals(row["yi"]) + 0.5 * (
        10.0 ** -_decimals(row["ci_lower"]) + 10.0 ** -_decimals(row["ci_upper"])
    )
    if abs(below - above) <= rounding + CI_ASYMMETRY_REL * (below + above) / 2.0:
        return []
    return [
        Problem(
            "warning",
            EFFECTS_NAME,
            line,
            "ci_lower",
            f"the confidence interval [{row['ci_lower']}, {row['ci_upper']}] is not symmetric around yi = {row['yi']} "
            f"(half-widths {below:.4g} below, {above:.4g} above; more than rounding plus {CI_ASYMMETRY_REL:.0%}): "
            "was it computed on another scale than yi (e.g. a ratio instead of its log)? sei is taken from its width",
        )
    ]


def _decimals(text: str) -> int:
    """Decimal places of a number as printed (``"0.25"`` -> 2, ``"12"`` -> 0, ``"1.5e-3"`` -> 4)."""
    mantissa, _, exponent = text.lower().partition("e")
    places = len(mantissa.partition(".")[2])
    return max(places - (int(exponent) if exponent else 0), 0)


def arm_values(arms: pd.DataFrame) -> pd.DataFrame:
    """Arm rows that passed the row checks with float ``mean``, ``sd`` (SEM converted), ``n`` and their line.

    The form :func:`analysis.dataset.measures.measure_problems` checks (the editor line is in
    :data:`analysis.dataset.measures.LINE_COLUMN`).
    """
    out = arms.assign(mean=_by_index(arms, "mean"), sd=_sd_column(arms), n=_by_index(arms, "n"))
    out[LINE_COLUMN] = [csv_line(idx) for idx in arms.index]
    if "control_arm" not in out.columns:
        out["control_arm"] = ""
    return out


def suspicious_arms(arms: pd.DataFrame) -> list[Problem]:
    """Warnings for legal but suspicious arm summaries (run only on rows that passed the checks).

    * SD larger than a positive mean (implausible for a positive bone measure);
    * |g| > 2 while both arms' "SD"s are SEM-sized: their coefficient of variation is below
      0.4 times the median CV of the same outcome across the dataset (an SEM is SD/sqrt(n), i.e.
      2.4-3.2 times smaller at n = 6-10). Such an SD may be an SEM, which inflates g by sqrt(n).
      Needs at least three studies reporting the outcome.
    """
    sd, mean, n = _sd_column(arms), _by_index(arms, "mean"), _by_index(arms, "n")
    problems = [
        Problem(
            "warning",
            ARMS_NAME,
            csv_line(idx),
            _dispersion_col(arms, idx),
            f"SD ({sd[idx]:.4g}) larger than the positive mean ({mean[idx]:.4g})",
        )
        for idx in arms.index
        if mean[idx] > 0 and sd[idx] > mean[idx]
    ]
    with np.errstate(all="ignore"):  # CV of a near-zero mean may overflow to inf, which is what we want
        cv = pd.Series(np.where(mean != 0, sd / np.abs(mean.where(mean != 0, 1.0)), np.inf), index=arms.index)
    n_studies = arms.groupby("outcome")["study"].nunique()
    median_cv = cv.groupby(arms["outcome"]).median()
    outcomes = dict(zip(arms.index, arms["outcome"], strict=True))
    for idx, ctrl in _comparisons(arms).items():
        outcome = outcomes[idx]
        if ctrl is None or n_studies[outcome] < 3:
            continue
        g, _ = hedges_g(mean[idx], sd[idx], n[idx], mean[ctrl], sd[ctrl], n[ctrl])
        threshold = SEM_SIZED_CV_RATIO * float(median_cv[outcome])
        if abs(g) > LARGE_G and max(cv[idx], cv[ctrl]) < threshold:
            problems.append(
                Problem(
                    "warning",
                    ARMS_NAME,
                    csv_line(idx),
                    _dispersion_col(arms, idx),
                    f"|g| = {abs(float(g)):.2f} > {LARGE_G:g} with SEM-sized dispersion "
                    f"(CV below {SEM_SIZED_CV_RATIO:g} x the "
                    f"outcome's median CV {threshold / SEM_SIZED_CV_RATIO:.3g}): check the SD is not an SEM",
                )
            )
    return problems


def _dispersion_col(arms: pd.DataFrame, idx: int) -> str:
    """The column (``sd`` or ``sem``) a row gave its dispersion in."""
    return "sd" if "sd" in arms.columns and arms.at[idx, "sd"] != "" else "sem"


def _sd_column(arms: pd.DataFrame) -> pd.Series:
    """Standard deviation per row, converting SEM to SD (rows must already be valid; may be inf)."""
    sd, sem = numeric_cells(arms, "sd"), numeric_cells(arms, "sem")
    with np.errstate(all="ignore"):
        converted = sd_from_sem(sem, numeric_cells(arms, "n"))
    return pd.Series(np.where(np.isnan(sd), converted, sd), index=arms.index)


def _records(frame: pd.DataFrame) -> zip:
    """``(index, {column: cell})`` per row (much faster than ``DataFrame.iterrows``)."""
    return zip(frame.index, frame.to_dict("records"), strict=True)


def _by_index(arms: pd.DataFrame, column: str) -> pd.Series:
    """Floats of a validated number column, indexed like ``arms``."""
    return pd.Series(numeric_cells(arms, column), index=arms.index)


def _control_rows(arms: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    """Control rows by ``(study, outcome)``: arm id -> row index (first one of a duplicated arm)."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for idx, study, outcome, role, arm in zip(
        arms.index, arms["study"], arms["outcome"], arms["role"], arms["arm"], strict=True
    ):
        if role == "control":
            out.setdefault((study, outcome), {}).setdefault(arm, idx)
    return out


def _comparisons(arms: pd.DataFrame) -> dict[int, int | None]:
    """Treatment row index -> index of the control row it is compared with (None if ambiguous or absent)."""
    controls = _control_rows(arms)
    out = {}
    for idx, row in _records(arms[arms["role"] == "treatment"]):
        group = controls.get((row["study"], row["outcome"]), {})
        named = row.get("control_arm", "")
        out[idx] = group.get(named) if named else (next(iter(group.values())) if len(group) == 1 else None)
    return out


def unused_data_warnings(raw: RawDataset) -> list[Problem]:
    """Warnings for valid data that contribute nothing to any analysis (run on error-free datasets only).

    * a study of ``studies.csv`` with no row in the data file;
    * arm-level: a study whose rows for an outcome have no treatment arm (only control and/or
      sham arms): they give no comparison, so the study contributes nothing to that outcome;
    * a declared outcome that no comparison reports (``evmeta run`` skips it, ``evmeta fit``
      refuses it).
    """
    rows = raw.arms if raw.arms is not None else raw.effects
    if rows is None or raw.studies is None or raw.meta is None:
        return []
    data_name = ARMS_NAME if raw.arms is not None else EFFECTS_NAME
    problems = [
        Problem(
            "warning",
            STUDIES_NAME,
            csv_line(idx),
            "study",
            f"study {sid!r} has no rows in {data_name}: it contributes nothing to the analysis",
        )
        for idx, sid in raw.studies["study"].items()
        if sid not in set(rows["study"])
    ]
    compared = rows
    if raw.arms is not None:
        treated = rows.groupby(["study", "outcome"], sort=False)["role"].agg(lambda roles: "treatment" in set(roles))
        for (study, outcome), has_treatment in treated.items():
            if not has_treatment:
                first = rows.index[(rows["study"] == study) & (rows["outcome"] == outcome)][0]
                problems.append(
                    Problem(
                        "warning",
                        ARMS_NAME,
                        csv_line(first),
                        "role",
                        f"study {study!r} has no treatment arm for outcome {outcome!r} (only control/sham "
                        "rows): it gives no comparison and contributes nothing to this outcome",
                    )
                )
        compared = rows[rows["role"] == "treatment"]
    reported = set(compared["outcome"])
    problems += [
        Problem(
            "warning",
            TOML_NAME,
            None,
            f"outcomes.{oid}",
            f"outcome {oid!r} is declared but no comparison reports it: evmeta run skips it",
        )
        for oid in raw.meta["outcomes"]
        if oid not in reported
    ]
    return problems
