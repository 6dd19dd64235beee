"""A comparison-level dose effect that exists only within studies is recovered by the arm-level model (slow: NUTS).

Twelve simulated studies, each with one control and three dose arms (doses 1, 2, 3) sharing
it, eight animals per arm. The true SMD of comparison j of study i is
``theta_ij = 1 + u_i + 0.5 (dose_j - 2) + w_ij`` with ``u_i ~ N(0, 0.4²)`` and
``w_ij ~ N(0, 0.15²)``. Every study has the same three doses, so the study-mean dose is
the same for all studies: between studies the dose says nothing, and a meta-regression on one
effect per study (the GLS-collapsed normal model) cannot estimate it at all. The multilevel
arm-level model with ``dose`` as a comparison-level moderator must find the slope from the
within-study contrasts: its 95% interval covers 0.5 and excludes 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.dataset.load import load_dataset
from analysis.fitting.arm_level import fit_arm_meta_regression
from tests.helpers import write_dataset

pytestmark = pytest.mark.slow

TOML = """name = "dose_within"
title = "Simulated: dose effect within studies only"
provenance = "simulated"
citation = "test fixture"
effect_measure = "SMD"

[outcomes.y]
label = "Outcome"
unit = "a.u."
direction = 1

[moderators.dose]
type = "numeric"
level = "comparison"
"""
SLOPE, MU, TAU, OMEGA, N, K = 0.5, 1.0, 0.4, 0.15, 8, 12


def _simulate(seed: int) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    studies, arms = ["study"], ["study,arm,role,outcome,mean,sd,sem,n,control_arm,dose"]
    for i in range(K):
        sid, sigma, base = f"S{i:02d}", rng.uniform(1, 5), rng.uniform(10, 50)
        studies.append(sid)
        u = TAU * rng.standard_normal()
        groups = {"ctrl": (0.0, "")}
        for dose in (1, 2, 3):
            groups[f"d{dose}"] = (MU + u + SLOPE * (dose - 2) + OMEGA * rng.standard_normal(), str(dose))
        for arm, (theta, dose) in groups.items():
            x = base + theta * sigma + sigma * rng.standard_normal(N)
            role, control = ("control", "") if arm == "ctrl" else ("treatment", "ctrl")
            arms.append(f"{sid},{arm},{role},y,{x.mean():.6g},{x.std(ddof=1):.6g},,{N},{control},{dose}")
    return "\n".join(studies) + "\n", "\n".join(arms) + "\n"


def test_within_study_dose_slope_is_recovered(tmp_path):
    studies, arms = _simulate(20261202)
    dataset = load_dataset(write_dataset(tmp_path, toml=TOML, studies=studies, arms=arms))
    result = fit_arm_meta_regression(dataset, "y", moderators=["dose"], seed=11)
    assert result.converged and result.settings["structure"] == "multilevel"
    slope = result.settings["beta"]["dose"]
    assert slope["q025"] < SLOPE < slope["q975"]
    assert slope["q025"] > 0.0
    assert result.summaries["mu"]["q025"] < MU < result.summaries["mu"]["q975"]
