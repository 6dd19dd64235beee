"""Effect measures NMD and ROM of arm-level data, their located errors, priors per measure, and effects from CIs.

NMD is checked against hand calculations from Vesterinen et al. (2014, J Neurosci Methods
221:92-102): NMD = 100 (m_t - m_c) / (m_sham - m_c), SD* = 100 SD / |m_c - m_sham|,
v = SD*_c^2 / n_c + SD*_t^2 / n_t, stored as yi = direction * NMD. ROM against metafor is in
``tests/test_reference_metafor_escalc.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.checks.sensitivity import prior_grid
from analysis.cli import EXIT_INVALID, EXIT_OK, main
from analysis.config import DATA_DIR
from analysis.dataset.effects import compute_effects, outcome_effects, with_measure
from analysis.dataset.load import load_dataset
from analysis.dataset.problems import DatasetError, NotApplicable, errors, warnings_of
from analysis.dataset.validate import validate_dataset
from analysis.fitting.arm_level import fit_arm_level
from analysis.fitting.random_effects import fit_random_effects
from models.priors import PriorSet, PriorSpec, default_priors, measure_scale
from tests.helpers import ARMS, TOML, replace_line, write_dataset
from tests.test_reference_metafor_escalc import ROM_REFERENCE
from tests.tolerances import EFFECT_SIZE_ABS

NMD_TOML = TOML.replace('effect_measure = "SMD"', 'effect_measure = "NMD"')
ROM_TOML = TOML.replace('effect_measure = "SMD"', 'effect_measure = "ROM"')

# Made-up arms with round numbers. BMD: higher is better; Tb_Sp: lower is better. C2022 gives SEMs
# (SD = SEM * sqrt(9) = 3 SEM). B2021's two treatment arms share control ovx.
NMD_ARMS = """study,arm,role,outcome,mean,sd,sem,n,control_arm
A2020,sham,sham,BMD,100,10,,8,
A2020,ovx,control,BMD,60,12,,8,
A2020,ev,treatment,BMD,80,9,,7,ovx
A2020,sham,sham,Tb_Sp,300,50,,8,
A2020,ovx,control,Tb_Sp,400,60,,8,
A2020,ev,treatment,Tb_Sp,330,55,,8,ovx
B2021,sham,sham,BMD,0.30,0.02,,6,
B2021,ovx,control,BMD,0.20,0.02,,6,
B2021,ev_low,treatment,BMD,0.25,0.03,,6,ovx
B2021,ev_high,treatment,BMD,0.28,0.025,,7,ovx
C2022,sham,sham,BMD,50,,2,9,
C2022,ovx,control,BMD,30,,1.5,9,
C2022,ev,treatment,BMD,35,,2,9,
"""

# By hand, comparison -> (yi = direction * NMD, vi):
NMD_EXPECTED = {
    # NMD = 100 * 20 / 40 = 50; SD*_c = 100 * 12 / 40 = 30, SD*_t = 100 * 9 / 40 = 22.5
    ("A2020", "BMD", "ev"): (50.0, 30**2 / 8 + 22.5**2 / 7),
    # NMD = 100 * (330 - 400) / (300 - 400) = 70 restored; direction -1 -> yi = -70.
    # SD*_c = 100 * 60 / 100 = 60, SD*_t = 100 * 55 / 100 = 55
    ("A2020", "Tb_Sp", "ev"): (-70.0, 60**2 / 8 + 55**2 / 8),
    # deficit 0.10: NMD = 100 * 0.05 / 0.10 = 50 and 100 * 0.08 / 0.10 = 80; SD*_c = 20, SD*_t = 30 and 25
    ("B2021", "BMD", "ev_low"): (50.0, 20**2 / 6 + 30**2 / 6),
    ("B2021", "BMD", "ev_high"): (80.0, 20**2 / 6 + 25**2 / 7),
    # deficit 20: NMD = 100 * 5 / 20 = 25; SD_c = 4.5, SD_t = 6 -> SD*_c = 22.5, SD*_t = 30
    ("C2022", "BMD", "ev"): (25.0, 22.5**2 / 9 + 30**2 / 9),
}


def _located(found, file, line, column):
    return [p for p in found if p.file == file and p.line == line and p.column == column]


# --- NMD -----------------------------------------------------------------------------------------


def test_nmd_matches_hand_calculation(tmp_path):
    table = compute_effects(load_dataset(write_dataset(tmp_path, toml=NMD_TOML, arms=NMD_ARMS)))
    assert table.measure == "NMD"
    data = table.data.set_index(["study", "outcome", "comparison"])
    assert len(data) == len(NMD_EXPECTED)
    for key, (yi, vi) in NMD_EXPECTED.items():
        assert data.at[key, "yi"] == pytest.approx(yi, abs=EFFECT_SIZE_ABS), key
        assert data.at[key, "vi"] == pytest.approx(vi, abs=EFFECT_SIZE_ABS), key
    # benefit = direction * yi is the NMD itself: 70% of the Tb_Sp deficit restored
    row = table.data[(table.data["study"] == "A2020") & (table.data["outcome"] == "Tb_Sp")].iloc[0]
    assert row["direction"] * row["yi"] == pytest.approx(70.0, abs=EFFECT_SIZE_ABS)


def test_nmd_shared_control_covariance_is_the_control_term(tmp_path):
    table = compute_effects(load_dataset(write_dataset(tmp_path, toml=NMD_TOML, arms=NMD_ARMS)))
    names, cov = table.covariance["B2021/BMD/ovx"]
    assert names == ("ev_low", "ev_high")
    # SD*_c^2 / n_c = (100 * 0.02 / 0.10)^2 / 6
    assert cov[0, 1] == pytest.approx(20**2 / 6, abs=EFFECT_SIZE_ABS) and cov[1, 0] == cov[0, 1]
    assert cov[0, 0] == pytest.approx(NMD_EXPECTED[("B2021", "BMD", "ev_low")][1], abs=EFFECT_SIZE_ABS)


def test_nmd_without_sham_arm_names_the_studies(tmp_path):
    # the tiny dataset has a sham arm for A2020/BMD only
    found = errors(validate_dataset(write_dataset(tmp_path, toml=NMD_TOML)))
    assert len(found) == 3
    for line, study, outcome in [(6, "A2020", "Tb_Sp"), (8, "B2021", "BMD"), (11, "C2022", "BMD")]:
        (problem,) = _located(found, "arms.csv", line, "role")
        assert f"study {study!r} has no arm with role 'sham' for outcome {outcome!r}" in problem.message


def test_nmd_sham_equal_to_control_is_an_error(tmp_path):
    arms = replace_line(NMD_ARMS, 2, "A2020,sham,sham,BMD,60,10,,8,")
    found = errors(validate_dataset(write_dataset(tmp_path, toml=NMD_TOML, arms=arms)))
    (problem,) = _located(found, "arms.csv", 3, "mean")
    assert "same mean as sham arm" in problem.message


def test_nmd_control_better_than_sham_is_a_warning(tmp_path):
    arms = replace_line(NMD_ARMS, 2, "A2020,sham,sham,BMD,50,10,,8,")
    problems = validate_dataset(write_dataset(tmp_path, toml=NMD_TOML, arms=arms))
    assert errors(problems) == []
    (warning,) = _located(warnings_of(problems), "arms.csv", 3, "mean")
    assert "no deficit" in warning.message


def test_nmd_several_sham_arms_is_an_error(tmp_path):
    arms = NMD_ARMS + "C2022,sham2,sham,BMD,52,,2,9,\n"
    found = errors(validate_dataset(write_dataset(tmp_path, toml=NMD_TOML, arms=arms)))
    (problem,) = _located(found, "arms.csv", 15, "role")
    assert "several sham arms" in problem.message


# --- ROM -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mean", ["0", "-0.22"])
def test_rom_non_positive_mean_is_located(tmp_path, mean):
    arms = replace_line(ARMS, 3, f"A2020,ovx,control,BMD,{mean},0.03,,8,")
    found = errors(validate_dataset(write_dataset(tmp_path, toml=ROM_TOML, arms=arms)))
    (problem,) = _located(found, "arms.csv", 3, "mean")
    assert "ROM (log ratio of means) needs positive means" in problem.message
    # the same data are valid SMD data; switching them to ROM gives the same located error
    dataset = load_dataset(write_dataset(tmp_path / "smd", arms=arms))
    for switch in (lambda: with_measure(dataset, "ROM"), lambda: compute_effects(dataset, measure="ROM")):
        with pytest.raises(DatasetError) as info:
            switch()
        assert [(p.file, p.line, p.column) for p in errors(info.value.problems)] == [("arms.csv", 3, "mean")]


def test_rom_ignores_sham_arm_means(tmp_path):
    arms = replace_line(ARMS, 2, "A2020,sham,sham,BMD,-1,0.03,,8,")
    assert errors(validate_dataset(write_dataset(tmp_path, toml=ROM_TOML, arms=arms))) == []


def test_unknown_arm_level_measure_is_rejected(tmp_path):
    toml = TOML.replace('effect_measure = "SMD"', 'effect_measure = "MD"')
    found = errors(validate_dataset(write_dataset(tmp_path, toml=toml)))
    (problem,) = _located(found, "dataset.toml", None, "effect_measure")
    assert "'MD'" in problem.message
    with pytest.raises(ValueError, match="must be one of SMD, NMD, ROM"):
        compute_effects(load_dataset(write_dataset(tmp_path / "ok")), measure="MD")


def test_effect_level_measure_cannot_be_switched():
    dataset = load_dataset(DATA_DIR / "bcg")
    with pytest.raises(ValueError, match="precomputed effects"):
        with_measure(dataset, "ROM")
    with pytest.raises(ValueError, match="precomputed effects"):
        compute_effects(dataset, measure="ROM")
    assert compute_effects(dataset).measure == "logRR"


def test_table_of_another_measure_is_refused(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path))
    with pytest.raises(ValueError, match="holds ROM but tiny is analysed as SMD"):
        outcome_effects(dataset, compute_effects(dataset, measure="ROM"), "BMD")


def test_smd_effects_unchanged_by_the_measure_switch(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path))
    smd = compute_effects(dataset)
    back = compute_effects(with_measure(with_measure(dataset, "ROM"), "SMD"))
    assert smd.measure == back.measure == "SMD"
    assert smd.data.equals(back.data)
    assert smd.covariance.keys() == back.covariance.keys()
    for group, (names, cov) in smd.covariance.items():
        assert back.covariance[group][0] == names and np.array_equal(back.covariance[group][1], cov)


# --- priors and fits follow the measure ----------------------------------------------------------


def test_default_priors_per_measure():
    assert default_priors("SMD") == PriorSet()
    assert default_priors("logRR") == PriorSet()
    assert default_priors("ROM").to_dict() == {"mu": "normal:0:1", "tau": "halfnormal:0.5"}
    assert default_priors("NMD").to_dict() == {"mu": "normal:0:100", "tau": "halfnormal:50"}
    assert PriorSet().slope == PriorSpec.parse("normal:0:5")
    assert default_priors("ROM").slope == PriorSpec.parse("normal:0:2.5")
    assert default_priors("NMD").slope == PriorSpec.parse("normal:0:250")
    assert (measure_scale("SMD"), measure_scale("ROM"), measure_scale("NMD"), measure_scale("logRR")) == (
        1.0,
        0.5,
        50.0,
        1.0,
    )


def test_fits_use_the_measure_default_priors(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path))
    smd = fit_random_effects(dataset, "BMD", engine="exact")
    assert smd.measure == "SMD" and smd.priors == {"mu": "normal:0:3", "tau": "halfnormal:1"}
    rom = fit_random_effects(with_measure(dataset, "ROM"), "BMD", engine="exact")
    assert rom.measure == "ROM" and rom.priors == {"mu": "normal:0:1", "tau": "halfnormal:0.5"}


def test_prior_grid_is_on_the_measure_scale():
    dataset = with_measure(load_dataset(DATA_DIR / "normand1999"), "ROM")
    grid = prior_grid(dataset, "length_of_stay")
    assert set(grid.loc[grid["varied"] == "tau", "prior_mu"]) == {"normal:0:1"}
    assert set(grid.loc[grid["varied"] == "mu", "prior_tau"]) == {"halfnormal:0.5"}
    assert "halfnormal:0.5" in set(grid["prior_tau"])


def test_arm_level_likelihood_is_smd_only(tmp_path):
    dataset = with_measure(load_dataset(write_dataset(tmp_path)), "ROM")
    with pytest.raises(NotApplicable, match="SMD"):
        fit_arm_level(dataset, "BMD")


# --- command line --------------------------------------------------------------------------------


def test_cli_fit_exact_with_measure_rom(tmp_path):
    out = tmp_path / "fit.json"
    path = write_dataset(tmp_path)
    args = ["fit", str(path), "--outcome", "BMD", "--engine", "exact", "--measure", "ROM", "--json", str(out)]
    assert main(args) == EXIT_OK
    result = json.loads(out.read_text())
    assert result["measure"] == "ROM"
    assert result["priors"] == {"mu": "normal:0:1", "tau": "halfnormal:0.5"}
    studies = {s["study"]: s for s in result["studies"]}
    ref = {(r["study"], r["outcome"], r["arm"]): r for r in ROM_REFERENCE["tiny"]}
    for study in ("A2020", "C2022"):  # one comparison each: metafor's yi and vi
        assert studies[study]["yi"] == pytest.approx(ref[(study, "BMD", "ev")]["yi"], abs=EFFECT_SIZE_ABS)
        assert studies[study]["vi"] == pytest.approx(ref[(study, "BMD", "ev")]["vi"], abs=EFFECT_SIZE_ABS)
    # B2021: GLS combination of metafor's two log ratios with the shared-control covariance 0.0025
    y = np.array([ref[("B2021", "BMD", arm)]["yi"] for arm in ("ev_low", "ev_high")])
    v = [ref[("B2021", "BMD", arm)]["vi"] for arm in ("ev_low", "ev_high")]
    w = np.linalg.solve(np.array([[v[0], 0.0025], [0.0025, v[1]]]), np.ones(2))
    assert studies["B2021"]["yi"] == pytest.approx(w @ y / w.sum(), abs=EFFECT_SIZE_ABS)
    assert studies["B2021"]["vi"] == pytest.approx(1 / w.sum(), abs=EFFECT_SIZE_ABS)


def test_cli_explicit_prior_overrides_the_measure_default(tmp_path):
    out = tmp_path / "fit.json"
    path = write_dataset(tmp_path, arms=NMD_ARMS)
    args = [
        "fit",
        str(path),
        "--outcome",
        "BMD",
        "--engine",
        "exact",
        "--measure",
        "NMD",
        "--tau-prior",
        "halfnormal:20",
    ]
    assert main([*args, "--json", str(out)]) == EXIT_OK
    result = json.loads(out.read_text())
    assert result["measure"] == "NMD"
    assert result["priors"] == {"mu": "normal:0:100", "tau": "halfnormal:20"}


def test_cli_effects_measure_nmd_lists_studies_without_sham(tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert main(["effects", str(write_dataset(tmp_path)), "--measure", "NMD", "--out", str(out)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "arms.csv:6 [role]" in err and "arms.csv:8 [role]" in err and "arms.csv:11 [role]" in err
    assert "nothing written" in err and not out.exists()


def test_cli_arm_likelihood_with_rom_is_refused(tmp_path, capsys):
    args = ["fit", str(write_dataset(tmp_path)), "--outcome", "BMD", "--likelihood", "arm", "--measure", "ROM"]
    assert main(args) == EXIT_INVALID
    assert "SMD" in capsys.readouterr().err


# --- effects.csv with confidence intervals -------------------------------------------------------

Z95, Z90 = 1.959963984540054, 1.6448536269514722
CI_HEADER = "study,outcome,yi,vi,sei,ci_lower,ci_upper,ci_level\n"


def test_effects_from_confidence_intervals(tmp_path):
    effects = CI_HEADER + "A2020,BMD,0.5,,,0.108,0.892,\nB2021,BMD,0.3,,,0.1,0.5,0.9\nC2022,BMD,0.2,0.04,,,,\n"
    dataset = load_dataset(write_dataset(tmp_path, arms=None, effects=effects))
    assert [w for w in dataset.warnings if w.file == "effects.csv"] == []
    sei = dataset.effects.set_index("study")["sei"]
    assert sei["A2020"] == pytest.approx(0.784 / (2 * Z95), abs=EFFECT_SIZE_ABS)
    assert sei["B2021"] == pytest.approx(0.4 / (2 * Z90), abs=EFFECT_SIZE_ABS)
    assert sei["C2022"] == pytest.approx(0.2, abs=EFFECT_SIZE_ABS)
    table = compute_effects(dataset).data.set_index("study")
    assert table.at["A2020", "vi"] == pytest.approx((0.784 / (2 * Z95)) ** 2, abs=EFFECT_SIZE_ABS)


@pytest.mark.parametrize(
    ("row", "column", "text"),
    [
        ("A2020,BMD,0.5,,,0.9,0.1,", "ci_lower", "must be below ci_upper"),
        ("A2020,BMD,0.5,,,0.5,0.5,", "ci_lower", "must be below ci_upper"),
        ("A2020,BMD,0.5,,,0.1,0.9,95", "ci_level", "in (0, 1)"),
        ("A2020,BMD,0.5,,,0.1,0.9,0", "ci_level", "in (0, 1)"),
        ("A2020,BMD,0.5,,,0.6,0.9,", "yi", "outside its confidence interval"),
        ("A2020,BMD,0.5,0.04,,0.1,0.9,", "vi/sei/ci_lower/ci_upper", "vi and CI given"),
        ("A2020,BMD,0.5,,,,,", "vi/sei/ci_lower/ci_upper", "none given"),
        ("A2020,BMD,0.5,,,0.1,,", "ci_upper", "give both bounds"),
        ("A2020,BMD,0.5,,,abc,0.9,", "ci_lower", "not a finite number"),
    ],
)
def test_bad_confidence_intervals_are_located(tmp_path, row, column, text):
    effects = CI_HEADER + row + "\nB2021,BMD,0.3,,0.1,,,\n"
    found = errors(validate_dataset(write_dataset(tmp_path, arms=None, effects=effects)))
    (problem,) = found
    assert (problem.file, problem.line, problem.column) == ("effects.csv", 2, column)
    assert text in problem.message


@pytest.mark.parametrize(
    ("header", "column"), [("ci_lower", "ci_upper"), ("ci_upper", "ci_lower"), ("ci_level", "ci_level")]
)
def test_ci_needs_both_columns(tmp_path, header, column):
    effects = f"study,outcome,yi,{header}\nA2020,BMD,0.5,0.1\n"
    (problem,) = errors(validate_dataset(write_dataset(tmp_path, arms=None, effects=effects)))
    assert (problem.file, problem.line, problem.column) == ("effects.csv", 1, column)
    assert "give both columns ci_lower and ci_upper" in problem.message


@pytest.mark.parametrize(
    ("yi", "lower", "upper", "warned"),
    [
        ("0.50", "0.20", "0.90", True),  # half-widths 0.3 and 0.4
        ("0.5", "0.2", "0.9", False),  # the same digits, but one decimal only: 0.54 - 0.15 = 0.94 - 0.54
        ("1.234", "0.851", "1.625", True),  # 0.383 vs 0.391: 0.008 > rounding 0.002 + 1% of 0.387
        ("1.234", "0.850", "1.617", False),  # 0.384 vs 0.383: within rounding
        ("0.123", "0.05", "0.2", False),  # 0.073 vs 0.077, but "0.2" is only known to +/-0.05
    ],
)
def test_asymmetric_interval_warns(tmp_path, yi, lower, upper, warned):
    effects = f"study,outcome,yi,ci_lower,ci_upper\nA2020,BMD,{yi},{lower},{upper}\n"
    problems = validate_dataset(write_dataset(tmp_path, arms=None, effects=effects))
    assert errors(problems) == []
    found = _located(warnings_of(problems), "effects.csv", 2, "ci_lower")
    assert bool(found) == warned
    if warned:
        assert "not symmetric around yi" in found[0].message
