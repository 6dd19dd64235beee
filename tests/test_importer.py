"""``evmeta import comparisons``: comparison sheets (CSV, XLSX, Latin-1) to dataset folders.

Each test writes a small sheet, imports it and checks the dataset written (or, on bad input, the
located problems and that nothing was written). The last test regenerates the two real datasets
of ``data/`` from the upstream sheets and their committed maps and requires identical bytes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openpyxl
import pytest

from analysis.cli import EXIT_INVALID, EXIT_OK, main
from analysis.config import DATA_DIR
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.problems import DatasetError, errors
from analysis.dataset.smd import hedges_g
from analysis.dataset.validate import validate_dataset
from analysis.importing.comparisons import import_comparisons

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

SHEET = """study,outcome,mean_t,sd_t,sem_t,n_t,mean_c,sd_c,sem_c,n_c,control
Li2021,BMD,0.26,0.02,,8,0.22,0.03,,8,ovx
Li2021,BMD,0.28,0.025,,9,0.22,0.03,,8,ovx
Wang2022,BMD,0.30,,0.01,6,0.21,,0.012,6,
Wang2022,Tb_Sp,330,,18,6,412,,21,6,
"""


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _problem_texts(exc: pytest.ExceptionInfo[DatasetError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_default_columns_round_trip(tmp_path):
    """Shared control id -> one control arm with two treatment arms; numbers and source rows kept."""
    out = tmp_path / "ds"
    report = import_comparisons(_write(tmp_path / "sheet.csv", SHEET), out)
    assert (report.rows_read, report.rows_kept, report.studies, report.control_groups) == (4, 4, 2, 3)
    assert report.comparisons == {"BMD": 3, "Tb_Sp": 1}
    assert report.assumed_directions == ("BMD", "Tb_Sp")  # no map: direction 1 assumed, and said so
    arms = _rows(out / "arms.csv")
    li = [r for r in arms if r["study"] == "Li2021"]
    assert [(r["arm"], r["role"], r["control_arm"]) for r in li] == [
        ("ovx", "control", ""),
        ("row2", "treatment", "ovx"),
        ("row3", "treatment", "ovx"),
    ]
    assert li[0]["source"] == "sheet.csv:rows 2, 3" and li[2]["source"] == "sheet.csv:row 3"
    assert (li[2]["mean"], li[2]["sd"], li[2]["sem"], li[2]["n"]) == ("0.28", "0.025", "", "9")
    wang = [r for r in arms if r["study"] == "Wang2022" and r["outcome"] == "BMD"]
    assert [(r["sd"], r["sem"]) for r in wang] == [("", "0.012"), ("", "0.01")]  # SEM used where no SD
    assert not validate_dataset(out)
    table = compute_effects(load_dataset(out)).data
    row = table[(table["study"] == "Li2021")].iloc[1]
    g, v = hedges_g(0.28, 0.025, 9, 0.22, 0.03, 8)
    assert row["yi"] == pytest.approx(g) and row["vi"] == pytest.approx(v)
    assert "4 rows read from sheet.csv, 4 kept, 0 dropped" in (out / "dataset.toml").read_text(encoding="utf-8")


def test_xlsx_input_with_a_named_sheet(tmp_path):
    book = openpyxl.Workbook()
    book.active.title = "notes"
    sheet = book.create_sheet("data")
    for row in csv.reader(io.StringIO(SHEET)):
        sheet.append([float(c) if c.replace(".", "").isdigit() else (c or None) for c in row])
    book.save(tmp_path / "book.xlsx")
    out = tmp_path / "ds"
    report = import_comparisons(tmp_path / "book.xlsx", out, sheet="data")
    assert (report.rows_kept, report.control_groups) == (4, 3)
    arms = _rows(out / "arms.csv")
    assert arms[2]["source"] == "book.xlsx:row 3" and arms[2]["n"] == "9" and arms[2]["mean"] == "0.28"
    with pytest.raises(DatasetError) as exc:
        import_comparisons(tmp_path / "book.xlsx", tmp_path / "other", sheet="Sheet9")
    assert "no sheet 'Sheet9'" in _problem_texts(exc)[0] and not (tmp_path / "other").exists()


def test_latin1_csv_needs_its_encoding(tmp_path):
    sheet = _write(tmp_path / "latin.csv", SHEET.replace("Li2021", "Clément2020"), encoding="latin-1")
    with pytest.raises(DatasetError) as exc:
        import_comparisons(sheet, tmp_path / "ds")
    assert "error: latin.csv:2: not UTF-8 text" in _problem_texts(exc)[0] and not (tmp_path / "ds").exists()
    import_comparisons(sheet, tmp_path / "ds", encoding="latin-1")
    assert [r["study"] for r in _rows(tmp_path / "ds" / "studies.csv")] == ["Clément2020", "Wang2022"]


FULL = """Paper,Experiment,Process,Species,Sex,Drug,RoB1,mT,sdT,nT,mC,sdC,nC
Ab 2001 (1),e1,Acquisition,Rat,M,flx,Yes,10,2,8,14,2.5,8
Ab 2001 (2),e2,Acquisition,Rat,M,par,Yes,11,2,8,14,2.5,8
Ab 2001 (1),e3,Extinction,Rat,M,flx,Yes,4,1,8,6,1.2,8
Cd 2005,e4,Acquisition,Mouse,F,flx,No,9,3,10,12,3,10
Cd 2005,e5,Acquisition,Rat,F,flx,No,8,3,10,12,3,10
Ef 2010,e6,Acquisition,Human,M,flx,Unclear,1,1,20,2,1,20
Ef 2010,e7,Acquisition,Rat,NA,flx,Unclear,5,1,1,6,1,6
Gh 2012,e8,Acquisition,Rat,F,flx,Unclear,5,1,6,6,1,6
"""

MAP = """
[dataset]
name = "mapped"
title = "A mapped sheet"
citation = "Test A et al. 2024"
licence = "CC BY 4.0"

[rows]
unusable = "drop"

[columns]
study = { column = "Paper", pattern = '^(.*?)(?: \\(\\d+\\))?$' }
outcome = "Process"
comparison = "Experiment"
mean_t = "mT"
sd_t = "sdT"
n_t = "nT"
mean_c = "mC"
sd_c = "sdC"
n_c = "nC"

[control]
key = ["mC", "sdC", "nC"]

[outcomes.acq]
value = "Acquisition"
label = "Fear acquisition"
direction = -1

[outcomes.ext]
value = "Extinction"
label = "Fear extinction"
direction = -1

[moderators.species]
column = "Species"
values = { Rat = "rat", Mouse = "mouse" }
type = "categorical"
reference = "rat"
mixed = "mixed"

[comparison_columns]
drug = "Drug"
sex = { column = "Sex", values = { "" = "not reported" } }

[risk_of_bias]
values = { Yes = "low", No = "high", Unclear = "unclear" }

[risk_of_bias.domains]
sequence_generation = "RoB1"

[[drop]]
column = "Species"
values = ["Human"]
reason = "human participants"
"""


def test_map_renames_declares_and_counts_dropped_rows(tmp_path):
    sheet = _write(tmp_path / "full.csv", FULL)
    out = tmp_path / "mapped"
    report = import_comparisons(sheet, out, columns=_write(tmp_path / "map.toml", MAP))
    assert report.dropped_by_reason() == {
        "human participants": 1,
        "unusable: treatment arm: n is not a whole number from 2 to 1,000,000": 1,
    }
    assert [d.line for d in report.dropped] == [7, 8]
    assert (report.rows_read, report.rows_kept, report.studies) == (8, 6, 3)
    assert report.comparisons == {"acq": 5, "ext": 1} and report.mixed == {"species": ["Cd 2005"]}
    # Ab 2001 (1) and (2) share the control numbers: one study, one control arm for acq
    arms = _rows(out / "arms.csv")
    ab = [
        (r["arm"], r["role"], r["control_arm"], r["drug"])
        for r in arms
        if r["study"] == "Ab 2001" and r["outcome"] == "acq"
    ]
    assert ab == [
        ("control", "control", "", ""),
        ("e1", "treatment", "control", "flx"),
        ("e2", "treatment", "control", "par"),
    ]
    studies = _rows(out / "studies.csv")
    assert studies == [
        {"study": "Ab 2001", "species": "rat", "rob_sequence_generation": "low"},
        {"study": "Cd 2005", "species": "mixed", "rob_sequence_generation": "high"},
        {"study": "Gh 2012", "species": "rat", "rob_sequence_generation": "unclear"},
    ]
    toml = (out / "dataset.toml").read_text(encoding="utf-8")
    assert 'licence = "CC BY 4.0"' in toml and "[outcomes.acq]" in toml and "direction = -1" in toml
    assert 'levels = ["rat", "mixed"]' in toml and "8 rows read from full.csv, 6 kept, 2 dropped (1 human" in toml
    notes = (out / "import_notes.md").read_text(encoding="utf-8")
    assert "### human participants (1 rows)" in notes and "- row 7: Species = 'Human'" in notes
    assert "- row 8: treatment arm: n is not a whole number" in notes
    assert (out / "import.toml").read_text(encoding="utf-8") == MAP  # the map is kept with the dataset
    assert not errors(validate_dataset(out))


def test_located_errors_and_nothing_written(tmp_path):
    bad = SHEET + "Wang2022,BMD,abc,0.1,,6,0.2,0.1,,1,\nZhou2023,BV_TV,1,,,5,1,0.1,,5,\n"
    out = tmp_path / "ds"
    with pytest.raises(DatasetError) as exc:
        import_comparisons(
            _write(tmp_path / "bad.csv", bad),
            out,
            columns=_write(tmp_path / "m.toml", "[outcomes.BMD]\ndirection = 1\n[outcomes.Tb_Sp]\ndirection = -1\n"),
        )
    texts = _problem_texts(exc)
    assert any(t.startswith("error: bad.csv:6 [mean_t]: treatment arm: the mean is not a number") for t in texts)
    assert any(t.startswith("error: bad.csv:6 [n_c]: control arm: n is not a whole number") for t in texts)
    assert any(t.startswith("error: bad.csv:7 [outcome]: outcome 'BV_TV' is not declared") for t in texts)
    assert not out.exists() and not any(p.name.startswith(".ds") for p in tmp_path.iterdir())


def test_unusable_rows_are_errors_by_default(tmp_path):
    sheet = _write(tmp_path / "s.csv", SHEET + "Zhou2023,BMD,1,,,5,1,0.1,,5,\n")
    with pytest.raises(DatasetError) as exc:
        import_comparisons(sheet, tmp_path / "ds")
    assert _problem_texts(exc) == [
        "error: s.csv:6 [sd_t]: treatment arm: no SD or SEM; fix the cell, drop the row with a [[drop]] rule, "
        'or set [rows] unusable = "drop"'
    ]


def test_disagreeing_shared_control_is_a_located_error(tmp_path):
    sheet = _write(tmp_path / "s.csv", SHEET.replace("0.28,0.025,,9,0.22,0.03", "0.28,0.025,,9,0.23,0.03"))
    with pytest.raises(DatasetError) as exc:
        import_comparisons(sheet, tmp_path / "ds")
    (text,) = _problem_texts(exc)
    assert text.startswith("error: s.csv:3 [mean_c]: shares its control group with row 2")
    assert "mean = 0.23 where that row gives 0.22" in text and not (tmp_path / "ds").exists()


def test_study_level_moderator_must_be_constant_unless_mixed(tmp_path):
    plan = MAP.replace('mixed = "mixed"\n', "")
    with pytest.raises(DatasetError) as exc:
        import_comparisons(_write(tmp_path / "f.csv", FULL), tmp_path / "ds", columns=_write(tmp_path / "m.toml", plan))
    assert _problem_texts(exc)[0].startswith("error: f.csv:6 [Species]: species is study-level but study 'Cd 2005'")


def test_map_problems_are_located(tmp_path):
    plan = "[colums]\nstudy = 'x'\n[outcomes.BMD]\nlabel = 'BMD'\n[[drop]]\ncolumn = 'a'\n"
    with pytest.raises(DatasetError) as exc:
        import_comparisons(
            _write(tmp_path / "s.csv", SHEET), tmp_path / "ds", columns=_write(tmp_path / "m.toml", plan)
        )
    texts = _problem_texts(exc)
    assert "error: m.toml [colums]: unknown table" in texts[0]
    assert any(t.startswith("error: m.toml [outcomes.BMD.direction]: required") for t in texts)
    assert any(t.startswith("error: m.toml [drop[0]]:") for t in texts)


def test_dataset_is_validated_before_it_is_moved_into_place(tmp_path):
    """An error only ``evmeta validate`` finds (an outcome id unusable as a file name) writes nothing."""
    plan = '[outcomes."a/b"]\nvalue = "BMD"\ndirection = 1\n[outcomes.Tb_Sp]\ndirection = -1\n'
    with pytest.raises(DatasetError) as exc:
        import_comparisons(
            _write(tmp_path / "s.csv", SHEET), tmp_path / "ds", columns=_write(tmp_path / "m.toml", plan)
        )
    assert "dataset.toml [outcomes.a/b]" in _problem_texts(exc)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml", "s.csv"]


def test_cli_import_exit_codes(tmp_path, capsys):
    sheet, out = _write(tmp_path / "s.csv", SHEET), tmp_path / "ds"
    assert main(["import", "comparisons", str(sheet), "--out", str(out)]) == EXIT_OK
    assert "wrote " in capsys.readouterr().out and (out / "arms.csv").is_file()
    assert main(["import", "comparisons", str(sheet), "--out", str(out)]) == EXIT_INVALID  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.csv", SHEET + "Zhou2023,BMD,x,1,,5,1,0.1,,5,\n")
    assert main(["import", "comparisons", str(bad), "--out", str(out), "--overwrite"]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "error: bad.csv:6 [mean_t]" in err and "nothing written" in err
    assert len(_rows(out / "arms.csv")) == 7  # the previous import is untouched


REAL = {
    "fst_martins2025": (REALDATA / "martins2025_fst" / "data" / "Dataclean_200FST.xlsx", "utf-8"),
    "fearlearning_ssri": (REALDATA / "vanlissa_fearlearning" / "dat.csv", "latin-1"),
}


@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"upstream sheets not available ({REALDATA} is absent)")
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_datasets_regenerate_byte_identical(tmp_path, name):
    sheet, encoding = REAL[name]
    committed = DATA_DIR / name
    out = tmp_path / name
    import_comparisons(sheet, out, columns=committed / "import.toml", encoding=encoding)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.name for p in committed.iterdir())
    for file in written:
        assert (out / file).read_bytes() == (committed / file).read_bytes(), file


def test_sham_columns_give_one_sham_arm_per_control_group(tmp_path):
    sheet = "study,outcome,mean_t,sd_t,n_t,mean_c,sd_c,n_c,control,sham_mean,sham_sd,sham_n\n"
    sheet += "A2020,BMD,0.26,0.02,8,0.22,0.03,8,ovx,0.30,0.03,8\nA2020,BMD,0.27,0.02,8,0.22,0.03,8,ovx,0.30,0.03,8\n"
    out = tmp_path / "ds"
    import_comparisons(_write(tmp_path / "s.csv", sheet), out)
    arms = _rows(out / "arms.csv")
    assert [(r["arm"], r["role"], r["mean"]) for r in arms] == [
        ("ovx", "control", "0.22"),
        ("sham_ovx", "sham", "0.30"),
        ("row2", "treatment", "0.26"),
        ("row3", "treatment", "0.27"),
    ]
    assert not errors(validate_dataset(out))
    with pytest.raises(DatasetError) as exc:
        import_comparisons(
            _write(tmp_path / "t.csv", sheet.replace("ovx,0.30,0.03,8\n", "ovx,,,\n", 1)), tmp_path / "x"
        )
    assert _problem_texts(exc)[0].startswith("error: t.csv:3: shares its control group with row 2, but only one")
