"""The ``evmeta`` command line end to end: exit codes, located errors, nothing written on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from analysis.cli import EXIT_INVALID, EXIT_OK, main
from analysis.config import DATA_DIR, DEFAULT_DATASET
from tests.helpers import ARMS, replace_line, write_dataset


def test_validate_default_dataset_ok(capsys):
    assert main(["validate", str(DEFAULT_DATASET)]) == EXIT_OK
    assert "valid (0 error(s)" in capsys.readouterr().out


def test_validate_broken_dataset_lists_every_bad_row(tmp_path, capsys):
    arms = replace_line(
        replace_line(ARMS, 3, "A2020,ovx,control,BMD,x,0.03,,8,"), 10, "C2022,ovx,control,BMD,0.21,0,,1,"
    )
    path = write_dataset(tmp_path, arms=arms)
    before = sorted(p.name for p in path.iterdir())
    assert main(["validate", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "arms.csv:3 [mean]" in err and "arms.csv:10 [sd]" in err and "arms.csv:10 [n]" in err
    assert sorted(p.name for p in path.iterdir()) == before


def test_effects_out_writes_table_and_covariance(tmp_path):
    out = tmp_path / "effects.csv"
    assert main(["effects", str(write_dataset(tmp_path)), "--out", str(out)]) == EXIT_OK
    table = pd.read_csv(out)
    assert {"study", "outcome", "comparison", "yi", "vi", "direction"} <= set(table.columns)
    assert len(pd.read_csv(tmp_path / "effects.covariance.csv")) == 1


def test_effects_on_broken_dataset_writes_nothing(tmp_path, capsys):
    path = write_dataset(tmp_path, arms=replace_line(ARMS, 3, "A2020,ovx,control,BMD,0.22,-1,,8,"))
    out = tmp_path / "out" / "effects.csv"
    assert main(["effects", str(path), "--out", str(out)]) == EXIT_INVALID
    assert not out.exists() and not out.parent.exists()
    assert "nothing written" in capsys.readouterr().err


def test_fit_exact_json(tmp_path, capsys):
    out = tmp_path / "fit.json"
    code = main(
        [
            "fit",
            str(DATA_DIR / "normand1999"),
            "--outcome",
            "length_of_stay",
            "--engine",
            "exact",
            "--tau-prior",
            "halfnormal:0.5",
            "--mu-prior",
            "normal:0:10",
            "--json",
            str(out),
        ]
    )
    assert code == EXIT_OK
    result = json.loads(out.read_text())
    # bayesmeta 3.4, normand1999, tau ~ HalfNormal(0.5), mu ~ N(0, 10^2): posterior mean of mu
    assert result["mu"]["mean"] == pytest.approx(-0.53247270270549, abs=1e-3)
    assert result["priors"] == {"mu": "normal:0:10", "tau": "halfnormal:0.5"}
    assert "Bayesian random-effects meta-analysis" in capsys.readouterr().out


def test_fit_all_exact_writes_figures_tables(tmp_path):
    out = tmp_path / "fits"
    code = main(
        [
            "fit",
            str(DEFAULT_DATASET),
            "--all",
            "--engine",
            "exact",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "all.json"),
        ]
    )
    assert code == EXIT_OK
    fits = json.loads((tmp_path / "all.json").read_text())["fits"]
    assert set(fits) == {"BMD", "BV_TV", "Tb_N", "Tb_Sp", "Tb_Th", "Ct_Th", "ultimate_load"}
    for outcome in fits:
        assert (out / "figures" / f"forest_{outcome}.svg").stat().st_size > 10_000
        assert not (out / "figures" / f"forest_{outcome}.png").exists()  # one format (issue 19)
    assert len(pd.read_csv(out / "tables" / "pooled_summary.csv")) == 7


def test_fit_bad_prior_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", str(DEFAULT_DATASET), "--outcome", "BMD", "--tau-prior", "halfnormal:-1"])
    assert info.value.code == 2 and "must be > 0" in capsys.readouterr().err


def test_fit_unknown_outcome_exits_invalid(capsys):
    assert main(["fit", str(DEFAULT_DATASET), "--outcome", "BMC", "--engine", "exact"]) == EXIT_INVALID
    assert "not declared" in capsys.readouterr().err


def test_console_script_installed(tmp_path):
    exe = shutil.which("evmeta") or str(__import__("pathlib").Path(sys.executable).with_name("evmeta"))
    done = subprocess.run([exe, "validate", str(DATA_DIR / "normand1999")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_compare_saved_fits_and_standard_set(tmp_path, capsys):
    for name, prior in (("hn1", "halfnormal:1"), ("hc05", "halfcauchy:0.5")):
        assert (
            main(
                [
                    "fit",
                    str(DATA_DIR / "normand1999"),
                    "--outcome",
                    "length_of_stay",
                    "--engine",
                    "exact",
                    "--tau-prior",
                    prior,
                    "--json",
                    str(tmp_path / f"{name}.json"),
                ]
            )
            == EXIT_OK
        )
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                "--fits",
                str(tmp_path / "hn1.json"),
                str(tmp_path / "hc05.json"),
                "--out",
                str(tmp_path / "cmp"),
            ]
        )
        == EXIT_OK
    )
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert list(table["label"]) == ["hn1", "hc05"] and set(table["interval"]) == {"eti95"}
    assert table.loc[0, "tau"] != table.loc[1, "tau"]  # the two priors give different tau posteriors
    assert "| hn1 |" in (tmp_path / "cmp" / "compare.md").read_text()
    # the standard set puts the Bayesian fits beside metafor-style DL and REML
    assert (
        main(["compare", str(DATA_DIR / "normand1999"), "--outcome", "length_of_stay", "--out", str(tmp_path / "std")])
        == EXIT_OK
    )
    std = pd.read_csv(tmp_path / "std" / "compare.csv").set_index("label")
    # metafor 3.8-1 rma(method="REML") on normand1999: mu = -0.537108258566786
    assert std.at["frequentist REML", "mu_mean"] == pytest.approx(-0.537108258566786, rel=1e-4)
    assert {"NUTS, default priors", "exact, default priors", "NUTS, arm-level likelihood", "frequentist DL"} <= set(
        std.index
    )
    assert (tmp_path / "std" / "compare_forest.svg").stat().st_size > 5_000
