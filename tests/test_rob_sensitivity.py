"""Risk-of-bias sensitivity by SYRCLE domain (issue 16, item 5; :mod:`analysis.checks.risk_of_bias`).

Every fit is the exact engine, so numbers are deterministic and can be compared exactly:

* the low-risk subset fit is the exact fit of a dataset holding only those studies (same numbers,
  also when a low-risk study has two comparisons sharing a control: the covariance block is kept);
* too few studies at low risk: no subset fit and the required note; the meta-regression needs
  two studies on each side;
* the meta-regression coefficient recovers a constructed difference (low-risk studies 0.5,
  the others 1.5: coefficient near −1) and P(low-risk more benefit) follows the outcome's direction;
* no judgement of a key domain: NotApplicable;
* JSON, table and report lines carry these numbers and notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.checks.risk_of_bias import (
    KEY_DOMAIN_GROUPS,
    MIN_K_SUBSET,
    MODEL,
    RobSensitivity,
    low_risk_studies,
    rob_sensitivity,
)
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.problems import NotApplicable
from analysis.fitting.random_effects import fit_random_effects
from analysis.report.rob_lines import ROB_HEADING, rob_sensitivity_lines
from models.priors import PriorSet, PriorSpec
from tests.helpers import ARMS, write_dataset

KEY = KEY_DOMAIN_GROUPS["both"]
ROB_HEADER = ",".join(f"rob_{d}" for d in KEY)


def _studies(judgements: list[tuple[str, str, str, str]], extra: str = "") -> str:
    """studies.csv of S0..S{k-1} with the four key domains (randomisation pair, blinding pair) judged."""
    head = f"study,species,duration_weeks,{ROB_HEADER}{extra}\n"
    return head + "".join(f"S{i},rat,{4 + i},{','.join(j)}\n" for i, j in enumerate(judgements))


def _effects(yi: list[float], vi: float = 0.02, outcomes: tuple[str, ...] = ("BMD",)) -> str:
    rows = "".join(f"S{i},{o},{y!r},{vi!r}\n" for o in outcomes for i, y in enumerate(yi))
    return "study,outcome,yi,vi\n" + rows


def _load(tmp_path: Path, studies: str, effects: str):
    return load_dataset(write_dataset(tmp_path, studies=studies, arms=None, effects=effects))


LOW, UNCLEAR, HIGH = "low", "unclear", "high"
#: S0-S4 low on randomisation (S0, S1 also on blinding: "both" has 2 low); S5-S9 unclear or high.
DESIGN = [(LOW, LOW, LOW, LOW)] * 2 + [(LOW, LOW, UNCLEAR, LOW)] * 3 + [(UNCLEAR, LOW, UNCLEAR, UNCLEAR)] * 3
DESIGN += [(HIGH, UNCLEAR, LOW, LOW)] * 2
#: Low-risk (on randomisation) studies have effect 0.5, the others 1.5 (small sampling variance).
YI = [0.45, 0.5, 0.55, 0.5, 0.5, 1.45, 1.5, 1.55, 1.5, 1.5]


@pytest.fixture(scope="module")
def constructed(tmp_path_factory) -> tuple[RobSensitivity, RobSensitivity]:
    """The analysis of BMD (higher is better) and Tb_Sp (lower is better) with the same effects."""
    dataset = _load(tmp_path_factory.mktemp("rob"), _studies(DESIGN), _effects(YI, outcomes=("BMD", "Tb_Sp")))
    table = compute_effects(dataset)
    return rob_sensitivity(dataset, "BMD", table=table), rob_sensitivity(dataset, "Tb_Sp", table=table)


def _group(result: RobSensitivity, name: str):
    (group,) = [g for g in result.groups if g.group == name]
    return group


# --- who is at low risk --------------------------------------------------------------------


def test_low_risk_needs_low_on_every_domain_of_the_group(tmp_path):
    dataset = _load(tmp_path, _studies(DESIGN), _effects(YI))
    assert low_risk_studies(dataset.studies, KEY_DOMAIN_GROUPS["randomisation"]) == [f"S{i}" for i in range(5)]
    assert low_risk_studies(dataset.studies, KEY_DOMAIN_GROUPS["blinding"]) == ["S0", "S1", "S8", "S9"]
    assert low_risk_studies(dataset.studies, KEY) == ["S0", "S1"]
    assert low_risk_studies(dataset.studies, []) == []


def test_judgements_are_read_case_insensitively(tmp_path):
    rows = [("Low", "LOW", "low", "low"), ("low", "Unclear", "low", "low"), ("low", "High", "low", "low")]
    dataset = _load(tmp_path, _studies(rows + [(LOW,) * 4] * 2), _effects([0.5] * 5))
    assert low_risk_studies(dataset.studies, KEY_DOMAIN_GROUPS["randomisation"]) == ["S0", "S3", "S4"]
    assert low_risk_studies(dataset.studies, KEY_DOMAIN_GROUPS["blinding"]) == [f"S{i}" for i in range(5)]


# --- the low-risk subset -------------------------------------------------------------------


def test_subset_fit_equals_a_direct_exact_fit_of_the_low_risk_studies(tmp_path):
    """Arm-level data; B2021 has two comparisons sharing a control (its covariance block must be kept)."""
    extra = "D2023,ovx,control,BMD,0.20,0.03,,9,\nD2023,ev,treatment,BMD,0.29,0.03,,9,ovx\n"
    studies = f"study,species,duration_weeks,{ROB_HEADER}\n"
    rows = {"A2020": "low,low,high,low", "B2021": "low,low,low,low", "C2022": "low,low,unclear,low"}
    rows["D2023"] = "unclear,low,low,low"
    full = studies + "".join(f"{s},rat,8,{r}\n" for s, r in rows.items())
    subset = studies + "".join(f"{s},rat,8,{r}\n" for s, r in rows.items() if s != "D2023")
    priors = PriorSet(mu=PriorSpec("normal", (0.0, 2.0)), tau=PriorSpec("halfnormal", (0.5,)))
    dataset = load_dataset(write_dataset(tmp_path / "full", studies=full, arms=ARMS + extra))
    direct = fit_random_effects(
        load_dataset(write_dataset(tmp_path / "subset", studies=subset, arms=ARMS)),
        "BMD",
        engine="exact",
        priors=priors,
    )
    everyone = fit_random_effects(dataset, "BMD", engine="exact", priors=priors)
    result = rob_sensitivity(dataset, "BMD", priors=priors)
    group = _group(result, "randomisation")
    assert (group.k_low, group.k_total, group.low_studies) == (3, 4, ("A2020", "B2021", "C2022"))
    for key in ("mean", "median", "q025", "q975"):
        assert group.mu[key] == pytest.approx(direct.summaries["mu"][key], rel=1e-12, abs=1e-12)
        assert group.tau[key] == pytest.approx(direct.summaries["tau"][key], rel=1e-12, abs=1e-12)
        assert result.mu[key] == pytest.approx(everyone.summaries["mu"][key], rel=1e-12, abs=1e-12)
    assert group.prob_benefit == pytest.approx(direct.prob_benefit, rel=1e-12)
    assert group.mu["mean"] != pytest.approx(result.mu["mean"], abs=1e-3)  # D2023 was really left out
    assert group.coef is None  # a single study is not at low risk on randomisation
    assert _group(result, "blinding").coef is not None  # B2021, D2023 vs A2020, C2022
    assert result.priors == {"mu": "normal:0:2", "tau": "halfnormal:0.5", "coef": "normal:0:1"}


def test_subset_mu_is_that_of_the_low_risk_studies(constructed):
    bmd, _ = constructed
    group = _group(bmd, "randomisation")
    assert group.k_low == 5 and group.k_total == 10
    assert group.mu["mean"] == pytest.approx(0.5, abs=0.05)
    assert group.mu["q025"] < 0.5 < group.mu["q975"]
    assert bmd.mu["mean"] == pytest.approx(1.0, abs=0.1)  # all studies, for comparison
    assert group.prob_benefit > 0.99


# --- too few studies at low risk -------------------------------------------------------------


def test_too_few_low_risk_studies_gives_the_note_and_no_subset_fit(tmp_path):
    rows = [(LOW, LOW, LOW, LOW)] + [(UNCLEAR, UNCLEAR, HIGH, UNCLEAR)] * 9
    result = rob_sensitivity(_load(tmp_path, _studies(rows), _effects(YI)), "BMD")
    group = _group(result, "randomisation")
    assert group.k_low == 1 and group.mu is None and group.tau is None and group.coef is None
    (note,) = group.notes
    assert note.startswith("Only 1 of 10 studies is at low risk of bias on randomisation")
    assert "the low-risk subset is not analysed" in note
    assert "no meta-regression is fitted" in note and "here 1 and 9" in note
    assert group.to_dict()["note"] == note and group.to_dict()["subset"] is None
    assert len(result.notes) == 3  # one per group, none fitted
    assert "coef" not in result.priors


def test_two_low_risk_studies_get_the_meta_regression_but_no_subset(constructed):
    bmd, _ = constructed
    both = _group(bmd, "both")
    assert both.k_low == 2 < MIN_K_SUBSET
    assert both.mu is None and both.coef is not None
    (note,) = both.notes
    assert note.startswith("Only 2 of 10 studies are at low risk of bias on randomisation and blinding")
    per_domain = "sequence_generation: 5, allocation_concealment: 8, blinding_performance: 4, blinding_outcome: 7"
    assert f"(studies low on {per_domain})" in note
    assert "meta-regression" not in note


def test_no_low_risk_study_and_all_low_risk_studies(tmp_path):
    rows = [(LOW, LOW, HIGH, UNCLEAR)] * 4
    result = rob_sensitivity(_load(tmp_path, _studies(rows), _effects(YI[:4])), "BMD")
    blinding, randomisation = _group(result, "blinding"), _group(result, "randomisation")
    assert blinding.notes[0].startswith("No study of 4 is at low risk of bias on blinding")
    assert randomisation.k_low == 4 and randomisation.coef is None
    assert randomisation.mu == result.mu  # every study is at low risk: the subset is all studies
    assert randomisation.notes == (
        "The meta-regression on low risk of bias on randomisation is not fitted: it needs at least 2 studies at "
        "low risk and 2 others (here 4 and 0).",
    )


# --- the meta-regression ---------------------------------------------------------------------


def test_regression_coefficient_recovers_the_constructed_difference(constructed):
    """Low-risk studies 0.5, the others 1.5: the coefficient (low − other) is about −1, never positive."""
    bmd, _ = constructed
    coef = _group(bmd, "randomisation").coef
    assert coef["mean"] == pytest.approx(-1.0, abs=0.1)
    assert coef["q025"] < coef["mean"] < coef["q975"] < -0.7
    assert bmd.priors["coef"] == "normal:0:1"


def test_benefit_direction_of_the_coefficient_follows_the_outcome(constructed):
    """Higher is better (BMD): low-risk studies show less benefit; lower is better (Tb_Sp): more."""
    bmd, tb_sp = constructed
    g_bmd, g_sp = _group(bmd, "randomisation"), _group(tb_sp, "randomisation")
    assert g_bmd.coef == g_sp.coef  # same effects, same posterior
    assert g_bmd.prob_low_more_benefit < 0.001
    assert g_sp.prob_low_more_benefit > 0.999
    assert g_sp.prob_low_more_benefit == pytest.approx(1.0 - g_bmd.prob_low_more_benefit, abs=1e-12)
    assert g_bmd.prob_benefit > 0.99 and g_sp.prob_benefit < 0.01  # subset mu = +0.5: a harm when lower is better


def test_no_difference_gives_a_coefficient_near_zero(tmp_path):
    yi = [1.0, 1.05, 0.95, 1.0, 1.0, 1.0, 0.95, 1.05, 1.0, 1.0]
    result = rob_sensitivity(_load(tmp_path, _studies(DESIGN), _effects(yi)), "BMD")
    coef = _group(result, "randomisation").coef
    assert coef["q025"] < 0.0 < coef["q975"]
    assert abs(coef["mean"]) < 0.1


# --- not applicable, partial domains --------------------------------------------------------


def test_not_applicable_without_key_domain_judgements(tmp_path):
    effects = _effects([0.5, 0.6, 0.7])
    plain = "study,species,duration_weeks\n" + "".join(f"S{i},rat,8\n" for i in range(3))
    with pytest.raises(NotApplicable, match="has no rob_ columns"):
        rob_sensitivity(_load(tmp_path / "none", plain, effects), "BMD")
    other = "study,species,duration_weeks,rob_other\n" + "".join(f"S{i},rat,8,low\n" for i in range(3))
    with pytest.raises(NotApplicable, match=r"include none of the key domains"):
        rob_sensitivity(_load(tmp_path / "other", other, effects), "BMD")


def test_a_dataset_judging_only_sequence_generation(tmp_path):
    studies = "study,species,duration_weeks,rob_sequence_generation\n" + "".join(
        f"S{i},rat,8,{'low' if i < 3 else 'high'}\n" for i in range(6)
    )
    result = rob_sensitivity(_load(tmp_path, studies, _effects(YI[:6])), "BMD")
    randomisation, blinding, both = (_group(result, g) for g in ("randomisation", "blinding", "both"))
    assert randomisation.domains == ("sequence_generation",) and randomisation.k_low == 3
    assert randomisation.mu is not None and randomisation.coef is not None
    assert "allocation_concealment: not in the dataset" in randomisation.notes[0]
    assert blinding.domains == () and blinding.mu is None and blinding.coef is None
    assert blinding.notes == (
        "The dataset has no judgement on blinding (blinding_performance, blinding_outcome): blinding is not analysed.",
    )
    assert both.domains == ("sequence_generation",) and both.mu == randomisation.mu


# --- outputs ---------------------------------------------------------------------------------


def test_to_dict_is_json_ready_with_the_documented_keys(constructed):
    bmd, _ = constructed
    data = json.loads(json.dumps(bmd.to_dict(), allow_nan=False))
    assert data["outcome"] == "BMD" and data["model"] == MODEL == "exact engine, normal likelihood"
    assert [g["group"] for g in data["groups"]] == ["randomisation", "blinding", "both"]
    randomisation = data["groups"][0]
    assert set(randomisation) >= {"group", "domains", "k_low", "k_total", "subset", "regression", "note"}
    assert randomisation["domains"] == ["sequence_generation", "allocation_concealment"]
    assert set(randomisation["subset"]["mu"]) >= {"mean", "q025", "q975"}
    assert set(randomisation["regression"]["coef"]) >= {"mean", "q025", "q975"}
    assert randomisation["note"] is None
    assert data["groups"][2]["subset"] is None and data["groups"][2]["note"].startswith("Only 2 of 10")


def test_table_has_one_row_for_all_studies_and_one_per_group(constructed):
    bmd, _ = constructed
    table = bmd.table()
    assert table["group"].tolist() == ["all studies", "randomisation", "blinding", "both"]
    assert table["k_low"].isna().tolist() == [True, False, False, False]
    assert table["k_low"].iloc[1:].tolist() == [5, 4, 2]
    assert table.loc[1, "mu_mean"] == _group(bmd, "randomisation").mu["mean"]
    assert table.loc[1, "coef_mean"] == _group(bmd, "randomisation").coef["mean"]
    assert np.isnan(table.loc[3, "mu_mean"]) and np.isfinite(table.loc[3, "coef_mean"])
    assert np.isnan(table.loc[0, "coef_mean"])


def test_report_lines_have_heading_table_and_notes(constructed):
    bmd, _ = constructed
    lines = rob_sensitivity_lines("BMD", bmd)
    assert lines[0] == ROB_HEADING
    assert ROB_HEADING == "#### Risk of bias: sensitivity by SYRCLE domain (exact engine, normal likelihood)"
    text = "\n".join(lines)
    coef = _group(bmd, "randomisation").coef
    assert "| low risk on randomisation | 5 of 10 | 0.50 [" in text
    assert f"{coef['mean']:.2f} [{coef['q025']:.2f}, {coef['q975']:.2f}]" in text
    assert "higher is better" in text and "not tests" in text
    assert any(line.startswith("- Only 2 of 10 studies are at low risk") for line in lines)
    assert lines[-1] == ""
    with pytest.raises(ValueError, match="not 'Tb_Sp'"):
        rob_sensitivity_lines("Tb_Sp", bmd)
