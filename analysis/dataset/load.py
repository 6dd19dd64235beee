"""Typed, validated datasets (the data contract of DESIGN.md §2).

:func:`load_dataset` reads a dataset folder, validates it completely and only then converts
the cells to typed columns; a dataset with any error raises :class:`DatasetError` listing
every problem, so no number is ever computed from bad data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.dataset.measures import DEFAULT_CI_LEVEL, LINE_COLUMN, sei_from_ci
from analysis.dataset.problems import DatasetError, Problem, errors
from analysis.dataset.read import ARMS_NAME, EFFECTS_NAME, STUDIES_NAME, TOML_NAME, csv_line, numeric_cells, read_raw
from analysis.dataset.smd import sd_from_sem
from analysis.dataset.validate import validate_raw


@dataclass(frozen=True)
class Published:
    """A published frequentist result for one outcome (``[outcomes.<ID>.published]`` in dataset.toml).

    ``estimate``, ``ci`` and ``i2`` (percent) as printed, with ``digits`` / ``i2_digits`` decimals;
    ``scale`` is ``"benefit"`` when the paper's sign is positive for a benefit (e.g. control −
    treatment for a lower-is-better outcome) and ``"natural"`` when it is treatment − control.
    ``method`` is metafor's ``rma(method=...)``; ``control_n = "split"`` means the paper divided a
    shared control's n (rounded down) among its comparisons and treated them as independent,
    ``"as-is"`` that it used each comparison's n unchanged; ``control_n_column`` names a column of
    the treatment rows of ``arms.csv`` holding the control n the paper used for each comparison,
    when its split cannot be recomputed from the data (e.g. a shared control digitised twice).
    """

    source: str
    estimate: float
    ci: tuple[float, float]
    k: int
    i2: float | None = None
    method: str = "REML"
    control_n: str = "as-is"
    control_n_column: str | None = None
    scale: str = "natural"
    digits: int = 2
    i2_digits: int = 1


@dataclass(frozen=True)
class Outcome:
    """An outcome declared in ``dataset.toml``; ``direction`` is 1 if higher is better, -1 if lower."""

    id: str
    label: str
    unit: str
    direction: int
    published: Published | None = None


@dataclass(frozen=True)
class Moderator:
    """A moderator declared in ``dataset.toml``.

    ``level`` is ``"study"`` (a column of ``studies.csv``, one value per study) or
    ``"comparison"`` (a column of the treatment rows of ``arms.csv`` or of the rows of
    ``effects.csv``, one value per comparison; see :mod:`analysis.dataset.moderators`).
    """

    name: str
    type: str
    reference: str | None = None
    levels: tuple[str, ...] | None = None
    level: str = "study"


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: declarations, the study table and arm- or effect-level rows."""

    path: Path
    name: str
    title: str
    provenance: str
    citation: str
    effect_measure: str
    outcomes: dict[str, Outcome]
    moderators: dict[str, Moderator]
    studies: pd.DataFrame
    arms: pd.DataFrame | None = None
    effects: pd.DataFrame | None = None
    warnings: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def level(self) -> str:
        """``"arms"`` for arm-level summaries, ``"effects"`` for precomputed effect sizes."""
        return "arms" if self.arms is not None else "effects"

    @property
    def is_simulated(self) -> bool:
        """True when the dataset declares ``provenance = "simulated"``."""
        return self.provenance == "simulated"

    def sha256(self) -> str:
        """Content hash of the dataset files (for manifests and caches)."""
        digest = hashlib.sha256()
        for name in (TOML_NAME, STUDIES_NAME, ARMS_NAME, EFFECTS_NAME):
            file = self.path / name
            if file.is_file():
                digest.update(name.encode())
                digest.update(file.read_bytes())
        return digest.hexdigest()


def load_dataset(path: str | Path) -> Dataset:
    """Load and validate a dataset folder.

    Parameters
    ----------
    path : str or pathlib.Path
        Folder holding ``dataset.toml``, ``studies.csv`` and ``arms.csv`` or ``effects.csv``.

    Returns
    -------
    Dataset
        Typed tables; validation warnings are kept in ``Dataset.warnings``.

    Raises
    ------
    DatasetError
        If any check fails; ``.problems`` lists every problem with file, line and column.
    """
    path = Path(path)
    raw = read_raw(path)
    problems = validate_raw(raw)
    if errors(problems):
        raise DatasetError(str(path), problems)
    meta = raw.meta
    assert meta is not None and raw.studies is not None  # guaranteed by validation
    moderators = _moderators(meta)
    return Dataset(
        path=path,
        name=meta["name"],
        title=meta["title"],
        provenance=meta["provenance"],
        citation=meta["citation"],
        effect_measure=meta.get("effect_measure", "SMD"),
        outcomes=_outcomes(meta),
        moderators=moderators,
        studies=_typed_studies(raw.studies, moderators),
        arms=None if raw.arms is None else _typed_arms(raw.arms, moderators),
        effects=None if raw.effects is None else _typed_effects(raw.effects, moderators),
        warnings=tuple(p for p in problems if p.severity == "warning"),
    )


def _outcomes(meta: dict) -> dict[str, Outcome]:
    return {
        oid: Outcome(
            id=oid,
            label=spec.get("label", oid),
            unit=spec.get("unit", ""),
            direction=int(spec["direction"]),
            published=_published(spec.get("published")),
        )
        for oid, spec in meta["outcomes"].items()
    }


def _published(spec: dict | None) -> Published | None:
    if spec is None:
        return None
    fields = {
        key: spec[key]
        for key in ("i2", "method", "control_n", "control_n_column", "scale", "digits", "i2_digits")
        if key in spec
    }
    return Published(
        source=spec["source"],
        estimate=float(spec["estimate"]),
        ci=(float(spec["ci"][0]), float(spec["ci"][1])),
        k=int(spec["k"]),
        **fields,
    )


def _moderators(meta: dict) -> dict[str, Moderator]:
    out = {}
    for name, spec in meta.get("moderators", {}).items():
        levels = tuple(spec["levels"]) if "levels" in spec else None
        out[name] = Moderator(
            name=name,
            type=spec["type"],
            reference=spec.get("reference"),
            levels=levels,
            level=spec.get("level", "study"),
        )
    return out


def _numeric_moderators(frame: pd.DataFrame, moderators: dict[str, Moderator], level: str) -> None:
    """Convert the numeric moderators of ``level`` to float in place (empty cells, e.g. of control rows: NaN)."""
    for name, mod in moderators.items():
        if mod.type == "numeric" and mod.level == level:
            frame[name] = numeric_cells(frame, name)


def _typed_studies(studies: pd.DataFrame, moderators: dict[str, Moderator]) -> pd.DataFrame:
    out = studies.copy()
    _numeric_moderators(out, moderators, "study")
    for col in [c for c in out.columns if c.startswith("rob_")]:
        out[col] = out[col].str.lower()
    return out.reset_index(drop=True)


def _typed_arms(arms: pd.DataFrame, moderators: dict[str, Moderator]) -> pd.DataFrame:
    """Arm rows with float ``mean``, ``sd`` (SEM converted: SD = SEM·sqrt(n)), int ``n`` and the editor line.

    Numeric comparison-level moderators are floats (NaN on control and sham rows).
    """
    out = arms.copy()
    _numeric_moderators(out, moderators, "comparison")
    out[LINE_COLUMN] = [csv_line(idx) for idx in arms.index]
    out["mean"] = numeric_cells(arms, "mean")
    out["n"] = numeric_cells(arms, "n").astype(int)
    sd, sem = numeric_cells(arms, "sd"), numeric_cells(arms, "sem")
    out["dispersion_reported"] = np.where(np.isnan(sd), "sem", "sd")
    out["sd"] = np.where(np.isnan(sd), sd_from_sem(sem, out["n"].to_numpy()), sd)
    out["sem"] = sem
    if "control_arm" not in out.columns:
        out["control_arm"] = ""
    return out.reset_index(drop=True)


def _typed_effects(effects: pd.DataFrame, moderators: dict[str, Moderator]) -> pd.DataFrame:
    """Effect rows with float ``yi``, ``vi`` and ``sei`` (whichever was given, the others derived).

    A row giving a confidence interval instead has ``sei = (ci_upper - ci_lower) / (2 z)``
    (:func:`analysis.dataset.measures.sei_from_ci`, ``ci_level`` 0.95 when empty). Numeric
    comparison-level moderators are floats.
    """
    out = effects.copy()
    _numeric_moderators(out, moderators, "comparison")
    out["yi"] = numeric_cells(effects, "yi")
    vi, sei = numeric_cells(effects, "vi"), numeric_cells(effects, "sei")
    level = numeric_cells(effects, "ci_level")
    ci_sei = sei_from_ci(
        numeric_cells(effects, "ci_lower"),
        numeric_cells(effects, "ci_upper"),
        np.where(np.isnan(level), DEFAULT_CI_LEVEL, level),
    )
    sei = np.where(np.isnan(sei), ci_sei, sei)
    out["vi"] = np.where(np.isnan(vi), sei**2, vi)
    out["sei"] = np.sqrt(out["vi"])
    for col in ("n_treatment", "n_control"):
        out[col] = numeric_cells(effects, col)
    if "comparison" not in out.columns:
        out["comparison"] = ""
    return out.reset_index(drop=True)
