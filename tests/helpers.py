"""Small datasets written to temporary folders for the tests."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.dataset.load import Dataset
    from analysis.results.random_effects import MetaAnalysisResult

TOML = """name = "tiny"
title = "Tiny test dataset"
provenance = "simulated"
citation = "test fixture"
effect_measure = "SMD"

[outcomes.BMD]
label = "Bone mineral density"
unit = "g/cm2"
direction = 1

[outcomes.Tb_Sp]
label = "Trabecular separation"
unit = "um"
direction = -1

[moderators.species]
type = "categorical"
reference = "rat"
levels = ["rat", "mouse"]

[moderators.duration_weeks]
type = "numeric"
"""

STUDIES = """study,species,duration_weeks,rob_sequence_generation
A2020,rat,8,low
B2021,mouse,4,unclear
C2022,rat,12,high
"""

ARMS = """study,arm,role,outcome,mean,sd,sem,n,control_arm
A2020,sham,sham,BMD,0.30,0.03,,8,
A2020,ovx,control,BMD,0.22,0.03,,8,
A2020,ev,treatment,BMD,0.26,0.03,,8,ovx
A2020,ovx,control,Tb_Sp,400,60,,8,
A2020,ev,treatment,Tb_Sp,330,55,,8,ovx
B2021,ovx,control,BMD,0.20,,0.01,6,
B2021,ev_low,treatment,BMD,0.23,,0.012,6,ovx
B2021,ev_high,treatment,BMD,0.25,,0.011,7,ovx
C2022,ovx,control,BMD,0.21,0.04,,10,
C2022,ev,treatment,BMD,0.24,0.04,,10,
"""


def write_dataset(
    root: Path, *, toml: str = TOML, studies: str = STUDIES, arms: str | None = ARMS, effects: str | None = None
) -> Path:
    """Write a dataset folder under ``root`` from the given file texts and return its path."""
    path = root / "tiny"
    path.mkdir(parents=True, exist_ok=True)
    (path / "dataset.toml").write_text(toml, encoding="utf-8")
    (path / "studies.csv").write_text(studies, encoding="utf-8")
    if arms is not None:
        (path / "arms.csv").write_text(arms, encoding="utf-8")
    if effects is not None:
        (path / "effects.csv").write_text(effects, encoding="utf-8")
    return path


def replace_line(text: str, line: int, new: str) -> str:
    """Replace 1-based ``line`` of a CSV text."""
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


#: Two comparison-level moderators (``level = "comparison"``): columns of the treatment rows of arms.csv.
COMPARISON_MODERATORS = """
[moderators.route]
type = "categorical"
level = "comparison"
reference = "iv"
levels = ["iv", "local"]

[moderators.dose_ug]
type = "numeric"
level = "comparison"
"""

#: :data:`ARMS` with the comparison-level moderators ``route`` and ``dose_ug`` on every treatment row
#: (control and sham rows empty); B2021 compares two routes and doses with one control.
ARMS_WITH_COMPARISON_MODERATORS = """study,arm,role,outcome,mean,sd,sem,n,control_arm,route,dose_ug
A2020,sham,sham,BMD,0.30,0.03,,8,,,
A2020,ovx,control,BMD,0.22,0.03,,8,,,
A2020,ev,treatment,BMD,0.26,0.03,,8,ovx,iv,50
A2020,ovx,control,Tb_Sp,400,60,,8,,,
A2020,ev,treatment,Tb_Sp,330,55,,8,ovx,iv,50
B2021,ovx,control,BMD,0.20,,0.01,6,,,
B2021,ev_low,treatment,BMD,0.23,,0.012,6,ovx,iv,10
B2021,ev_high,treatment,BMD,0.25,,0.011,7,ovx,local,100
C2022,ovx,control,BMD,0.21,0.04,,10,,,
C2022,ev,treatment,BMD,0.24,0.04,,10,,local,25
"""


def write_comparison_moderator_dataset(root: Path, *, arms: str = ARMS_WITH_COMPARISON_MODERATORS) -> Path:
    """The tiny dataset with the study-level moderators of :data:`TOML` and :data:`COMPARISON_MODERATORS`."""
    return write_dataset(root, toml=TOML + COMPARISON_MODERATORS, arms=arms)


@functools.cache
def tiny_arm_fit() -> tuple[Dataset, MetaAnalysisResult]:
    """The tiny dataset and one arm-level NUTS fit of its BMD (seed 3, 2 chains x 300 draws), made once per session.

    Shared by the tests of the default fit and its checks, which only read the draws (the
    predictive check adds its own ``posterior_predictive`` group), so that the fast suite samples
    this model once instead of once per test.
    """
    from analysis.dataset.load import load_dataset
    from analysis.fitting.arm_level import fit_arm_level
    from analysis.fitting.sampling import SamplerSettings

    dataset = load_dataset(write_dataset(Path(tempfile.mkdtemp(prefix="evmeta_tiny_"))))
    fit = fit_arm_level(dataset, "BMD", seed=3, sampler=SamplerSettings(draws=300, tune=300, chains=2))
    return dataset, fit
