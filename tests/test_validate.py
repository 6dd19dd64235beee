"""The dataset validator: one test per kind of problem, each located by file, line and column."""

from __future__ import annotations

import pytest

from analysis.dataset.load import load_dataset
from analysis.dataset.problems import DatasetError, errors, warnings_of
from analysis.dataset.validate import validate_dataset
from tests.helpers import ARMS, STUDIES, TOML, replace_line, write_dataset


def _errors(tmp_path, **files):
    return errors(validate_dataset(write_dataset(tmp_path, **files)))


def _located(found, file, line, column):
    return [p for p in found if p.file == file and p.line == line and p.column == column]


def test_clean_dataset_has_no_errors(tmp_path):
    assert _errors(tmp_path) == []


@pytest.mark.parametrize("value", ["", "abc", "nan", "inf", "1;2", "1e"])
def test_missing_or_non_numeric_mean(tmp_path, value):
    arms = replace_line(ARMS, 3, f"A2020,ovx,control,BMD,{value},0.03,,8,")
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 3, "mean")


@pytest.mark.parametrize("n", ["1", "0", "-3", "7.5", "x", ""])
def test_n_below_two_or_not_whole(tmp_path, n):
    arms = replace_line(ARMS, 3, f"A2020,ovx,control,BMD,0.22,0.03,,{n},")
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 3, "n")


@pytest.mark.parametrize("sd,sem,column", [("0", "", "sd"), ("-0.1", "", "sd"), ("", "0", "sem"), ("", "-1", "sem")])
def test_non_positive_dispersion(tmp_path, sd, sem, column):
    arms = replace_line(ARMS, 3, f"A2020,ovx,control,BMD,0.22,{sd},{sem},8,")
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 3, column)


@pytest.mark.parametrize("sd,sem", [("0.03", "0.01"), ("", "")])
def test_both_or_neither_dispersion(tmp_path, sd, sem):
    arms = replace_line(ARMS, 3, f"A2020,ovx,control,BMD,0.22,{sd},{sem},8,")
    found = _located(_errors(tmp_path, arms=arms), "arms.csv", 3, "sd/sem")
    assert found and "exactly one" in found[0].message


def test_unknown_role(tmp_path):
    arms = replace_line(ARMS, 4, "A2020,ev,treated,BMD,0.26,0.03,,8,ovx")
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 4, "role")


def test_unknown_outcome(tmp_path):
    arms = replace_line(ARMS, 4, "A2020,ev,treatment,BMC,0.26,0.03,,8,ovx")
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 4, "outcome")


def test_treatment_without_control(tmp_path):
    arms = ARMS + "C2022,ev,treatment,Tb_Sp,300,50,,10,\n"
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 12, "role")


def test_named_control_arm_missing(tmp_path):
    arms = replace_line(ARMS, 4, "A2020,ev,treatment,BMD,0.26,0.03,,8,vehicle")
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 4, "control_arm")


def test_several_controls_need_control_arm(tmp_path):
    arms = ARMS + "C2022,ovx2,control,BMD,0.20,0.04,,10,\n"
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 11, "control_arm")


def test_duplicated_rows(tmp_path):
    arms = ARMS + "C2022,ev,treatment,BMD,0.24,0.04,,10,\n"
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 12, "study,arm,outcome")


def test_study_missing_from_studies_csv(tmp_path):
    arms = ARMS + "D2023,ovx,control,BMD,0.2,0.03,,8,\n"
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 12, "study")


def test_duplicated_study_id(tmp_path):
    studies = STUDIES + "A2020,rat,8,low\n"
    assert _located(_errors(tmp_path, studies=studies), "studies.csv", 5, "study")


def test_numeric_moderator_with_text(tmp_path):
    studies = replace_line(STUDIES, 3, "B2021,mouse,four,unclear")
    assert _located(_errors(tmp_path, studies=studies), "studies.csv", 3, "duration_weeks")


def test_categorical_moderator_undeclared_level(tmp_path):
    studies = replace_line(STUDIES, 3, "B2021,rabbit,4,unclear")
    assert _located(_errors(tmp_path, studies=studies), "studies.csv", 3, "species")


def test_declared_moderator_without_column(tmp_path):
    studies = "study,species,rob_sequence_generation\nA2020,rat,low\nB2021,mouse,low\nC2022,rat,low\n"
    assert _located(_errors(tmp_path, studies=studies), "studies.csv", 1, "duration_weeks")


def test_bad_risk_of_bias_value(tmp_path):
    studies = replace_line(STUDIES, 2, "A2020,rat,8,maybe")
    assert _located(_errors(tmp_path, studies=studies), "studies.csv", 2, "rob_sequence_generation")


def test_bad_direction_and_moderator_type(tmp_path):
    toml = TOML.replace("direction = -1", "direction = 0").replace('type = "numeric"', 'type = "number"')
    found = _errors(tmp_path, toml=toml)
    assert _located(found, "dataset.toml", None, "outcomes.Tb_Sp.direction")
    assert _located(found, "dataset.toml", None, "moderators.duration_weeks.type")


def test_invalid_toml_is_located(tmp_path):
    found = _errors(tmp_path, toml=TOML + "\nthis is = = not toml\n")
    assert found and found[0].file == "dataset.toml" and "invalid TOML" in found[0].message


def test_missing_required_column(tmp_path):
    arms = "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != 4) for line in ARMS.splitlines()) + "\n"
    assert _located(_errors(tmp_path, arms=arms), "arms.csv", 1, "mean")


def test_missing_files(tmp_path):
    path = write_dataset(tmp_path, arms=None)
    (path / "studies.csv").unlink()
    found = errors(validate_dataset(path))
    assert {p.file for p in found} == {"studies.csv", "arms.csv"}


def test_empty_and_non_utf8_files(tmp_path):
    path = write_dataset(tmp_path)
    (path / "arms.csv").write_bytes(b"")
    (path / "studies.csv").write_bytes("study\nM\xfcller2020\n".encode("latin-1"))
    messages = {p.file: p.message for p in errors(validate_dataset(path))}
    assert "empty" in messages["arms.csv"] and "UTF-8" in messages["studies.csv"]


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    arms = replace_line(
        replace_line(ARMS, 3, "A2020,ovx,control,BMD,x,0.03,,1,"), 10, "C2022,ovx,control,BMD,0.21,-1,,10,"
    )
    found = _errors(tmp_path, arms=arms)
    assert {(p.line, p.column) for p in found} == {(3, "mean"), (3, "n"), (10, "sd")}


def test_effects_level_rows_checked(tmp_path):
    effects = "study,outcome,yi,vi,sei\nA2020,BMD,0.5,0.1,\nB2021,BMD,abc,,0.3\nC2022,BMD,0.1,,\nC2022,BMD,0.2,0.1,\n"
    found = _errors(tmp_path, arms=None, effects=effects)
    assert _located(found, "effects.csv", 3, "yi")
    assert _located(found, "effects.csv", 4, "vi/sei")
    assert _located(found, "effects.csv", 5, "study,outcome")


def test_both_arms_and_effects_is_an_error(tmp_path):
    found = _errors(tmp_path, effects="study,outcome,yi,vi\nA2020,BMD,0.5,0.1\n")
    assert any("not both" in p.message for p in found)


def test_warning_sd_larger_than_positive_mean(tmp_path):
    arms = replace_line(ARMS, 10, "C2022,ovx,control,BMD,0.21,0.3,,10,")
    found = warnings_of(validate_dataset(write_dataset(tmp_path, arms=arms)))
    assert _located(found, "arms.csv", 10, "sd")


def test_warning_large_g_with_sem_sized_sd(tmp_path):
    arms = replace_line(
        replace_line(ARMS, 10, "C2022,ovx,control,BMD,0.21,0.004,,10,"), 11, "C2022,ev,treatment,BMD,0.24,0.004,,10,"
    )
    found = warnings_of(validate_dataset(write_dataset(tmp_path, arms=arms)))
    assert _located(found, "arms.csv", 11, "sd") and "SEM" in found[0].message
    assert not warnings_of(validate_dataset(write_dataset(tmp_path)))


def test_load_dataset_raises_with_all_problems(tmp_path):
    arms = replace_line(ARMS, 3, "A2020,ovx,control,BMD,x,0.03,,1,")
    with pytest.raises(DatasetError) as info:
        load_dataset(write_dataset(tmp_path, arms=arms))
    assert len(errors(info.value.problems)) == 2 and "arms.csv:3" in str(info.value)


def test_sem_converted_to_sd_on_loading(tmp_path):
    ds = load_dataset(write_dataset(tmp_path))
    row = ds.arms[(ds.arms["study"] == "B2021") & (ds.arms["arm"] == "ev_high")].iloc[0]
    assert row["sd"] == pytest.approx(0.011 * 7**0.5, rel=1e-12)
    assert row["dispersion_reported"] == "sem"
