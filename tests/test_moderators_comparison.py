"""Comparison-level moderators (``level = "comparison"``): validation, loading, the comparison table.

A comparison-level moderator is a column of the treatment rows of ``arms.csv`` (or of the rows of
``effects.csv``); :func:`analysis.dataset.moderators.comparison_table` puts study- and
comparison-level values on the comparisons of compute_effects, and the meta-regression design
builder must accept that table unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.config import DATA_DIR
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import Moderator, load_dataset
from analysis.dataset.moderators import KEY_COLUMNS, comparison_table, varies_within_studies
from analysis.dataset.problems import DatasetError, errors
from analysis.dataset.validate import validate_dataset
from analysis.importing.comparisons import import_comparisons
from models.meta_regression import build_design
from tests.helpers import (
    ARMS_WITH_COMPARISON_MODERATORS,
    COMPARISON_MODERATORS,
    STUDIES,
    TOML,
    replace_line,
    write_comparison_moderator_dataset,
    write_dataset,
)

ARMS = ARMS_WITH_COMPARISON_MODERATORS
HEADER = ARMS.splitlines()[0]


def _located(problems, severity, file, line, column):
    return [p for p in problems if (p.severity, p.file, p.line, p.column) == (severity, file, line, column)]


# ---------------------------------------------------------------------------------- validation


def test_clean_dataset_with_comparison_moderators(tmp_path):
    assert not errors(validate_dataset(write_comparison_moderator_dataset(tmp_path)))


def test_missing_column_is_located_at_the_header(tmp_path):
    arms = "\n".join(",".join(line.split(",")[:-1]) for line in ARMS.splitlines()) + "\n"  # drop dose_ug
    found = _located(
        validate_dataset(write_comparison_moderator_dataset(tmp_path, arms=arms)), "error", "arms.csv", 1, "dose_ug"
    )
    assert len(found) == 1 and "has no column" in found[0].message


def test_empty_cell_on_a_treatment_row(tmp_path):
    arms = replace_line(ARMS, 9, "B2021,ev_high,treatment,BMD,0.25,,0.011,7,ovx,,100")
    found = _located(
        validate_dataset(write_comparison_moderator_dataset(tmp_path, arms=arms)), "error", "arms.csv", 9, "route"
    )
    assert len(found) == 1 and found[0].message == "missing moderator value"


def test_undeclared_level(tmp_path):
    arms = replace_line(ARMS, 11, "C2022,ev,treatment,BMD,0.24,0.04,,10,,oral,25")
    found = _located(
        validate_dataset(write_comparison_moderator_dataset(tmp_path, arms=arms)), "error", "arms.csv", 11, "route"
    )
    assert len(found) == 1 and "'oral' not in declared levels" in found[0].message


def test_non_numeric_value_of_a_numeric_moderator(tmp_path):
    arms = replace_line(ARMS, 8, "B2021,ev_low,treatment,BMD,0.23,,0.012,6,ovx,iv,ten")
    found = _located(
        validate_dataset(write_comparison_moderator_dataset(tmp_path, arms=arms)), "error", "arms.csv", 8, "dose_ug"
    )
    assert len(found) == 1 and "non-numeric value 'ten'" in found[0].message


def test_value_on_a_control_row_is_ignored_with_a_warning(tmp_path):
    arms = replace_line(ARMS, 3, "A2020,ovx,control,BMD,0.22,0.03,,8,,iv,")
    problems = validate_dataset(write_comparison_moderator_dataset(tmp_path, arms=arms))
    assert not errors(problems)
    found = _located(problems, "warning", "arms.csv", 3, "route")
    assert len(found) == 1 and "control row is ignored" in found[0].message


def test_bad_level_key_and_reserved_name(tmp_path):
    toml = (
        TOML
        + '\n[moderators.batch]\ntype = "numeric"\nlevel = "arm"\n'
        + '\n[moderators.n]\ntype = "numeric"\nlevel = "comparison"\n'
    )
    problems = errors(validate_dataset(write_dataset(tmp_path, toml=toml)))
    assert _located(problems, "error", "dataset.toml", None, "moderators.batch.level")
    assert _located(problems, "error", "dataset.toml", None, "moderators.n")
    assert not [p for p in problems if p.file == "studies.csv"]  # neither is looked for in studies.csv


def test_study_level_rules_are_unchanged(tmp_path):
    """A study-level moderator is still a studies.csv column; a comparison-level one is not looked for there."""
    studies = replace_line(STUDIES, 3, "B2021,hamster,4,unclear")
    problems = errors(
        validate_dataset(write_dataset(tmp_path, toml=TOML + COMPARISON_MODERATORS, studies=studies, arms=ARMS))
    )
    assert [(p.file, p.line, p.column) for p in problems] == [("studies.csv", 3, "species")]


def test_effect_level_comparison_moderator(tmp_path):
    effects = "study,outcome,comparison,yi,vi,route,dose_ug\nA2020,BMD,ev,0.5,0.1,iv,50\nB2021,BMD,low,0.3,0.2,iv,\n"
    problems = errors(
        validate_dataset(write_dataset(tmp_path, toml=TOML + COMPARISON_MODERATORS, arms=None, effects=effects))
    )
    assert [(p.file, p.line, p.column, p.message) for p in problems] == [
        ("effects.csv", 3, "dose_ug", "missing moderator value")
    ]


# ---------------------------------------------------------------------------------- loading


def test_loading_types_comparison_moderators(tmp_path):
    dataset = load_dataset(write_comparison_moderator_dataset(tmp_path))
    assert dataset.moderators["route"] == Moderator("route", "categorical", "iv", ("iv", "local"), level="comparison")
    assert dataset.moderators["dose_ug"].level == "comparison"
    assert dataset.moderators["species"].level == "study"  # the default
    treated = dataset.arms["role"] == "treatment"
    assert dataset.arms["dose_ug"].dtype == float and dataset.arms.loc[~treated, "dose_ug"].isna().all()
    assert dataset.arms.loc[treated, "dose_ug"].tolist() == [50.0, 50.0, 10.0, 100.0, 25.0]
    assert "route" not in dataset.studies.columns


# ---------------------------------------------------------------------------------- comparison table


def test_comparison_table_rows_follow_compute_effects(tmp_path):
    dataset = load_dataset(write_comparison_moderator_dataset(tmp_path))
    table = comparison_table(dataset, "BMD")
    effects = compute_effects(dataset).data
    effects = effects[effects["outcome"] == "BMD"]
    assert list(table.columns) == [*KEY_COLUMNS, "species", "duration_weeks", "route", "dose_ug"]
    assert table[list(KEY_COLUMNS)].values.tolist() == effects[["study", "comparison", "control_arm"]].values.tolist()
    assert table["route"].tolist() == ["iv", "iv", "local", "local"]
    assert table["dose_ug"].tolist() == [50.0, 10.0, 100.0, 25.0]
    assert table["species"].tolist() == ["rat", "mouse", "mouse", "rat"]  # study-level: repeated per comparison
    assert table["duration_weeks"].tolist() == [8.0, 4.0, 4.0, 12.0]
    assert varies_within_studies(table, "route") and varies_within_studies(table, "dose_ug")
    assert not varies_within_studies(table, "species")
    tb = comparison_table(dataset, "Tb_Sp")
    assert tb[["study", "arm", "route"]].values.tolist() == [["A2020", "ev", "iv"]]


def test_comparison_table_errors_and_empty_outcome(tmp_path):
    toml = TOML + COMPARISON_MODERATORS + "\n[outcomes.Ct_Th]\ndirection = 1\n"
    dataset = load_dataset(write_dataset(tmp_path, toml=toml, arms=ARMS))
    with pytest.raises(ValueError, match="not declared"):
        comparison_table(dataset, "nope")
    empty = comparison_table(dataset, "Ct_Th")
    assert empty.empty and list(empty.columns) == [*KEY_COLUMNS, "species", "duration_weeks", "route", "dose_ug"]
    with pytest.raises(ValueError, match="no column"):
        varies_within_studies(empty, "strain")


def test_comparison_table_of_effect_level_data(tmp_path):
    effects = (
        "study,outcome,comparison,yi,vi,route,dose_ug\n"
        "A2020,BMD,ev,0.5,0.1,iv,50\nB2021,BMD,low,0.3,0.2,iv,10\nB2021,BMD,high,0.4,0.2,local,100\n"
    )
    dataset = load_dataset(write_dataset(tmp_path, toml=TOML + COMPARISON_MODERATORS, arms=None, effects=effects))
    table = comparison_table(dataset, "BMD")
    assert table[["study", "arm", "control_arm", "route", "species"]].values.tolist() == [
        ["A2020", "ev", "", "iv", "rat"],
        ["B2021", "low", "", "iv", "mouse"],
        ["B2021", "high", "", "local", "mouse"],
    ]
    assert table["dose_ug"].tolist() == [50.0, 10.0, 100.0]
    assert compute_effects(dataset).data["comparison"].tolist() == table["arm"].tolist()


def test_build_design_on_comparison_rows(tmp_path):
    """models.meta_regression.build_design, unchanged, gives one design row per comparison."""
    dataset = load_dataset(write_comparison_moderator_dataset(tmp_path))
    table = comparison_table(dataset, "BMD")
    mods = [dataset.moderators[n] for n in ("route", "dose_ug", "species")]
    design = build_design(table, mods)
    assert design.study == ("A2020", "B2021", "B2021", "C2022")
    assert design.coef_names == ("intercept", "route[local]", "dose_ug", "species[mouse]")
    dose = np.array([50.0, 10.0, 100.0, 25.0])
    np.testing.assert_allclose(
        design.X,
        np.column_stack([np.ones(4), [0, 0, 1, 1], dose - dose.mean(), [0, 1, 1, 0]]),
    )
    assert design.terms[0].counts == {"iv": 2, "local": 2}


# ---------------------------------------------------------------------------------- real data


def test_fst_drug_class_is_a_comparison_moderator():
    dataset = load_dataset(DATA_DIR / "fst_martins2025")
    assert dataset.moderators["drug_class"].level == "comparison"
    assert dataset.moderators["drug_class"].reference == "tricyclic"
    assert "dose" not in dataset.moderators  # mixed dose units (mg/kg, mg/kg chow, mg/mL, nmol, ...)
    table = comparison_table(dataset, "immobility")
    effects = compute_effects(dataset).data
    assert len(table) == 561 and table["arm"].tolist() == effects["comparison"].tolist()
    assert table["study"].tolist() == effects["study"].tolist()
    assert table["drug_class"].value_counts()["tricyclic"] == 244
    within = table.groupby("study")["drug_class"].nunique()
    assert (within > 1).sum() == 35  # "drug class varies within 35 publications" (dataset notes)
    assert varies_within_studies(table, "drug_class") and not varies_within_studies(table, "species")
    design = build_design(table, [dataset.moderators["drug_class"]])
    assert design.X.shape == (561, 10) and design.terms[0].reference == "tricyclic"


def test_fearlearning_ssri_and_frequency_are_comparison_moderators():
    dataset = load_dataset(DATA_DIR / "fearlearning_ssri")
    assert {n: m.level for n, m in dataset.moderators.items()} == {
        "test": "study",
        "species": "study",
        "ssri": "comparison",
        "frequency": "comparison",
    }
    assert dataset.moderators["frequency"].levels == ("acute", "subchronic", "chronic")
    table = comparison_table(dataset, "acq_retr_ctx")
    assert len(table) == 113 and table[["ssri", "frequency"]].ne("").all().all()
    assert varies_within_studies(table, "frequency")


# ---------------------------------------------------------------------------------- importer

SHEET = """study,outcome,mean_t,sd_t,sem_t,n_t,mean_c,sd_c,sem_c,n_c,control,route
Li2021,BMD,0.26,0.02,,8,0.22,0.03,,8,ovx,iv
Li2021,BMD,0.28,0.025,,9,0.22,0.03,,8,ovx,local
Wang2022,BMD,0.30,,0.01,6,0.21,,0.012,6,,iv
"""

MAP = """
[outcomes.BMD]
direction = 1

[moderators.route]
level = "comparison"
type = "categorical"

[comparison_columns]
route = "route"
"""


def _import(tmp_path: Path, sheet: str = SHEET, plan: str = MAP) -> Path:
    (tmp_path / "sheet.csv").write_text(sheet, encoding="utf-8")
    (tmp_path / "map.toml").write_text(plan, encoding="utf-8")
    out = tmp_path / "ds"
    import_comparisons(tmp_path / "sheet.csv", out, columns=tmp_path / "map.toml")
    return out


def test_importer_carries_the_comparison_level_through(tmp_path):
    out = _import(tmp_path)
    assert (
        '[moderators.route]\ntype = "categorical"\nlevel = "comparison"\nreference = "iv"\nlevels = ["iv", "local"]'
        in (out / "dataset.toml").read_text(encoding="utf-8")
    )
    dataset = load_dataset(out)
    assert dataset.moderators["route"].level == "comparison"
    assert "route" not in dataset.studies.columns
    assert comparison_table(dataset, "BMD")["route"].tolist() == ["iv", "local", "iv"]


def test_importer_locates_a_missing_comparison_moderator_value(tmp_path):
    sheet = SHEET.replace("0.28,0.025,,9,0.22,0.03,,8,ovx,local", "0.28,0.025,,9,0.22,0.03,,8,ovx,")
    with pytest.raises(DatasetError) as exc:
        _import(tmp_path, sheet=sheet)
    assert [(p.file, p.line, p.column) for p in errors(exc.value.problems)] == [("sheet.csv", 3, "route")]
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("plan", "key"),
    [
        (MAP.replace('route = "route"', 'other = "route"'), "moderators.route"),
        (MAP.replace('type = "categorical"', 'type = "categorical"\nmixed = "mixed"'), "moderators.route.mixed"),
    ],
)
def test_importer_map_errors_of_comparison_moderators(tmp_path, plan, key):
    with pytest.raises(DatasetError) as exc:
        _import(tmp_path, plan=plan)
    assert [(p.file, p.column) for p in errors(exc.value.problems)] == [("map.toml", key)]


def test_numeric_typing_matches_pandas(tmp_path):
    """Typed numeric moderators equal float() of their cells (study- and comparison-level)."""
    dataset = load_dataset(write_comparison_moderator_dataset(tmp_path))
    raw = pd.read_csv(tmp_path / "tiny" / "arms.csv")
    np.testing.assert_array_equal(dataset.arms["dose_ug"].to_numpy(), raw["dose_ug"].to_numpy(dtype=float))
    assert dataset.studies["duration_weeks"].tolist() == [8.0, 4.0, 12.0]


def test_study_moderator_named_like_a_key_column_is_refused(tmp_path):
    toml = TOML + '\n[moderators.arm]\ntype = "numeric"\n'
    studies = "study,species,duration_weeks,arm\nA2020,rat,8,1\nB2021,mouse,4,2\nC2022,rat,12,3\n"
    dataset = load_dataset(write_dataset(tmp_path, toml=toml, studies=studies))
    with pytest.raises(ValueError, match="named like key columns"):
        comparison_table(dataset, "BMD")
