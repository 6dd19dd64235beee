"""Reproducing a published frequentist result the paper's way (analysis/checks/reproduce.py).

Reference: R metafor 3.8-1 ``rma(escalc("SMD", ...), method = "REML")`` on the paper's route for
Martins et al. 2025 (tests/reference_data/metafor_fst_paper_route.R and .json); the paper's printed
numbers (abstract: g = 1.66, 95% CI 1.53 to 1.79, k = 561, I² = 81.5%) are in the dataset's
``[outcomes.immobility.published]`` table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.checks.reproduce import paper_effects, reproduce_published
from analysis.config import DATA_DIR
from analysis.dataset.load import load_dataset
from analysis.dataset.problems import DatasetError, NotApplicable
from analysis.dataset.smd import hedges_g
from tests.helpers import ARMS, TOML, write_dataset
from tests.tolerances import FREQUENTIST_REL

REFERENCE = json.loads((Path(__file__).parent / "reference_data" / "metafor_fst_paper_route.json").read_text())


@pytest.fixture(scope="module")
def fst():
    return reproduce_published(load_dataset(DATA_DIR / "fst_martins2025"), "immobility")


def test_metafor_fst_paper_route_estimate_ci_tau2_i2(fst):
    assert fst.fit.k == REFERENCE["k"] == 561
    for ours, theirs in [
        (fst.estimate, REFERENCE["estimate"]),
        (fst.ci[0], REFERENCE["ci_lb"]),
        (fst.ci[1], REFERENCE["ci_ub"]),
        (fst.fit.tau2, REFERENCE["tau2"]),
        (fst.fit.I2, REFERENCE["I2"]),
    ]:
        assert ours == pytest.approx(theirs, rel=FREQUENTIST_REL)


def test_the_published_numbers_are_reproduced_to_the_printed_precision(fst):
    assert fst.matches
    assert [row["estimate"] for row in fst.rows()] == ["1.66", "1.66"]
    assert fst.to_dict()["matches_printed_precision"] is True
    rows = fst.comparison_rows()  # on the comparison table's scale (treatment - control): negative
    assert rows[0]["mu_mean"] == -1.66 and rows[1]["mu_mean"] == pytest.approx(-REFERENCE["estimate"], rel=1e-4)


PUBLISHED = """
[outcomes.BMD.published]
source = "a paper"
estimate = {estimate}
ci = [{lo}, {hi}]
k = 4
control_n = "split"
"""


def _dataset(tmp_path: Path, estimate: float = 0.5, lo: float = 0.1, hi: float = 0.9):
    toml = TOML.replace("direction = 1\n", "direction = 1\n" + PUBLISHED.format(estimate=estimate, lo=lo, hi=hi), 1)
    return load_dataset(write_dataset(tmp_path, toml=toml))


def test_split_control_n_is_the_floor_of_n_over_its_comparisons(tmp_path):
    """B2021 has two treatment arms sharing a 6-animal control: each comparison gets 3 control animals."""
    effects = paper_effects(_dataset(tmp_path), "BMD", "split")
    b = effects[effects["study"] == "B2021"]
    assert b["n_control"].tolist() == [3.0, 3.0]
    g, v = hedges_g(
        np.array([0.23]),
        np.array([0.012 * np.sqrt(6)]),
        np.array([6.0]),
        np.array([0.20]),
        np.array([0.01 * np.sqrt(6)]),
        np.array([3.0]),
    )
    assert b["yi"].iloc[0] == pytest.approx(g[0], abs=1e-12) and b["vi"].iloc[0] == pytest.approx(v[0], abs=1e-12)
    assert effects[effects["study"] == "A2020"]["n_control"].tolist() == [8.0]  # an unshared control keeps its n


def test_a_result_that_differs_is_reported_as_not_reproduced(tmp_path):
    result = reproduce_published(_dataset(tmp_path, estimate=2.5, lo=2.0, hi=3.0), "BMD")
    assert not result.matches and result.fit.k == 4


def test_outcomes_without_a_published_result_and_effect_level_data_are_not_applicable(tmp_path):
    with pytest.raises(NotApplicable, match="no published result"):
        reproduce_published(load_dataset(write_dataset(tmp_path, arms=ARMS)), "BMD")
    with pytest.raises(NotApplicable, match="arm-level"):
        paper_effects(load_dataset(DATA_DIR / "raudenbush1985"), "iq_smd", "split")


def test_a_malformed_published_table_is_a_located_error(tmp_path):
    toml = TOML.replace(
        "direction = 1\n",
        'direction = 1\n\n[outcomes.BMD.published]\nestimate = "big"\nci = [2, 1]\nk = 0\nmethod = "ML"\nspin = 1\n',
        1,
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(write_dataset(tmp_path, toml=toml))
    columns = {p.column for p in err.value.problems if p.severity == "error"}
    assert {f"outcomes.BMD.published.{key}" for key in ("source", "estimate", "ci", "k", "method", "spin")} <= columns
