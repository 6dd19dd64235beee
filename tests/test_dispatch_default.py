"""Which likelihood ``evmeta fit`` uses by default (``--likelihood default``), and its errors."""

from __future__ import annotations

import pytest

from analysis.config import DATA_DIR
from analysis.dataset.effects import with_measure
from analysis.dataset.load import load_dataset
from analysis.fitting.dispatch import FitRequest, resolve_likelihood


@pytest.fixture(scope="module")
def flagship():
    return load_dataset(DATA_DIR / "bmsc_ev_osteoporosis")


def test_default_is_the_arm_level_likelihood_for_arm_level_smd_random_effects(flagship):
    assert resolve_likelihood(FitRequest(), flagship) == "arm"


@pytest.mark.parametrize(
    "request_",
    [FitRequest(engine="exact"), FitRequest(model="small-study"), FitRequest(model="meta-regression", moderator="all")],
)
def test_default_falls_back_to_normal_where_the_arm_level_model_does_not_apply(flagship, request_):
    assert resolve_likelihood(request_, flagship) == "normal"


def test_default_is_normal_for_other_measures_and_effect_level_data(flagship):
    assert resolve_likelihood(FitRequest(), with_measure(flagship, "ROM")) == "normal"
    assert resolve_likelihood(FitRequest(), load_dataset(DATA_DIR / "bcg")) == "normal"


def test_explicit_likelihoods_are_kept_and_checked(flagship):
    assert resolve_likelihood(FitRequest(likelihood="normal"), flagship) == "normal"
    assert resolve_likelihood(FitRequest(likelihood="normal-multilevel"), flagship) == "normal-multilevel"
    with pytest.raises(ValueError, match="--likelihood arm"):
        FitRequest(likelihood="arm", engine="exact")
    with pytest.raises(ValueError, match="normal-multilevel"):
        FitRequest(likelihood="normal-multilevel", model="small-study")
    with pytest.raises(ValueError, match="likelihood must be one of"):
        FitRequest(likelihood="poisson")
