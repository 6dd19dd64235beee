"""Edge cases with defined, documented behaviour (GitHub issue 9; README "Edge cases").

Fits use the exact engine (quadrature over tau), which is fast and is the oracle of the NUTS
tests. Each test states the behaviour it pins down:

* an outcome declared but reported by no study: a validator warning, ``ValueError`` from the fit,
  skipped (with the reason printed) by ``evmeta fit --all`` and recorded by ``evmeta run``;
* k = 1 and k = 2 studies: valid, finite summaries; tau is then informed mainly by its prior;
* identical effects: the posterior of tau concentrates near 0 without any error or warning;
* one huge study (n = 10000 per arm) among small ones: finite, the big study is barely shrunk;
* extreme SMDs (g ~ 20): finite; the default mu prior N(0, 3^2) shrinks mu strongly towards 0;
* n = 2 per arm: valid, J(2) = 1/sqrt(pi) is finite; n = 1 is an error;
* an outcome in arms.csv that dataset.toml does not declare: a located validator error;
* a moderator level with a single study: the meta-regression works and says so in a note;
* a study with only sham and control arms: no comparison, so it contributes nothing, and the
  validator says so in a warning (it used to be dropped silently).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import main
from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.problems import errors, warnings_of
from analysis.dataset.smd import correction_j, hedges_g
from analysis.dataset.validate import validate_dataset
from analysis.fitting.meta_regression import fit_meta_regression
from analysis.fitting.random_effects import fit_random_effects
from models.priors import PriorSet, PriorSpec
from tests.helpers import ARMS, TOML, write_dataset

#: HalfNormal(1), the default prior of tau: mean sqrt(2/pi), median 0.674, 97.5% quantile 2.241.
HALFNORMAL1_MEAN, HALFNORMAL1_Q975 = math.sqrt(2 / math.pi), 2.2414


def _studies(k: int) -> str:
    """k studies S0..S{k-1}, alternately rat and mouse, durations 4, 5, ..."""
    return "study,species,duration_weeks\n" + "".join(
        f"S{i},{'rat' if i % 2 == 0 else 'mouse'},{4 + i}\n" for i in range(k)
    )


def _effects_dataset(tmp_path: Path, rows: list[tuple[float, float]]) -> Path:
    """Effect-level dataset: study S<i> reports BMD with (yi, vi); Tb_Sp is declared, never reported."""
    effects = "study,outcome,yi,vi\n" + "".join(f"S{i},BMD,{y!r},{v!r}\n" for i, (y, v) in enumerate(rows))
    return write_dataset(tmp_path, studies=_studies(len(rows)), arms=None, effects=effects)


def _arms_dataset(tmp_path: Path, rows: list[tuple[float, float, int, float, float, int]]) -> Path:
    """Arm-level dataset: study S<i> compares (mean, sd, n) of treatment and control on BMD."""
    lines = ["study,arm,role,outcome,mean,sd,sem,n,control_arm"]
    for i, (mt, st, nt, mc, sc, nc) in enumerate(rows):
        lines += [f"S{i},ovx,control,BMD,{mc!r},{sc!r},,{nc},", f"S{i},ev,treatment,BMD,{mt!r},{st!r},,{nt},ovx"]
    return write_dataset(tmp_path, studies=_studies(len(rows)), arms="\n".join(lines) + "\n")


def _finite(summary: dict[str, float]) -> bool:
    return all(np.isfinite(v) for v in summary.values())


def _exact(path: Path, outcome: str = "BMD", **kwargs):
    return fit_random_effects(load_dataset(path), outcome, engine="exact", **kwargs)


# --- 0, 1, 2 studies ------------------------------------------------------------------------------


def test_declared_but_unreported_outcome_is_a_warning_an_error_for_fit_and_skipped(tmp_path, capsys):
    path = _effects_dataset(tmp_path, [(0.8, 0.2), (0.3, 0.1)])
    problems = validate_dataset(path)
    assert not errors(problems)
    assert [p.column for p in warnings_of(problems)] == ["outcomes.Tb_Sp"]
    with pytest.raises(ValueError, match="no study of tiny reports outcome 'Tb_Sp'"):
        _exact(path, "Tb_Sp")
    assert main(["fit", str(path), "--outcome", "Tb_Sp", "--engine", "exact"]) == 1
    assert "no study of tiny reports outcome 'Tb_Sp'" in capsys.readouterr().err
    assert main(["fit", str(path), "--all", "--engine", "exact"]) == 0
    captured = capsys.readouterr()
    assert "Tb_Sp: skipped (no study of tiny reports outcome 'Tb_Sp')" in captured.err
    assert "k = 2 studies" in captured.out


def test_one_study_gives_finite_summaries_and_tau_close_to_its_prior(tmp_path):
    result = _exact(_effects_dataset(tmp_path, [(0.8, 0.2)]))
    assert result.k == 1 and all(_finite(result.summaries[p]) for p in ("mu", "tau", "theta_new", "I2"))
    assert abs(result.summaries["tau"]["mean"] - HALFNORMAL1_MEAN) < 0.1  # one study says little about tau
    mu = result.summaries["mu"]
    assert mu["q025"] < 0.8 < mu["q975"] and mu["sd"] > math.sqrt(0.2)  # wider than the study's own SE
    theta_new = result.summaries["theta_new"]
    assert theta_new["q975"] - theta_new["q025"] > mu["q975"] - mu["q025"]


def test_two_studies_give_finite_summaries(tmp_path):
    result = _exact(_effects_dataset(tmp_path, [(0.8, 0.2), (0.2, 0.3)]))
    assert result.k == 2 and all(_finite(result.summaries[p]) for p in ("mu", "tau", "theta_new", "I2"))
    assert 0.2 < result.summaries["mu"]["mean"] < 0.8
    assert result.summaries["tau"]["q975"] < HALFNORMAL1_Q975  # some, not much, information on tau


# --- identical effects, a huge study, extreme SMDs, n = 2 ---------------------------------------------


def test_identical_effects_concentrate_tau_near_zero_without_error(tmp_path):
    result = _exact(_effects_dataset(tmp_path, [(0.5, 0.1)] * 10))
    tau, mu, i2 = result.summaries["tau"], result.summaries["mu"], result.summaries["I2"]
    assert tau["median"] < 0.1 and tau["q975"] < 0.35 and tau["mean"] < HALFNORMAL1_MEAN / 5
    assert i2["median"] < 0.1
    assert mu["mean"] == pytest.approx(0.5, abs=0.01)
    assert mu["sd"] == pytest.approx(math.sqrt(0.1 / 10), rel=0.25)  # nearly the fixed-effect SE
    shrunk = result.studies["theta_mean"].to_numpy()
    assert np.allclose(shrunk, 0.5, atol=0.01)


def test_one_huge_study_among_small_ones(tmp_path):
    small = [(1.0, 1.0, 8, 0.0, 1.0, 8)] * 4
    huge = (0.1, 1.0, 10000, 0.0, 1.0, 10000)
    path = _arms_dataset(tmp_path, [*small, huge])
    assert not errors(validate_dataset(path))
    table = compute_effects(load_dataset(path))
    assert table.data["vi"].iloc[-1] < 2.1e-4  # 1/10000 + 1/10000 + g^2/40000
    result = _exact(path)
    assert all(_finite(result.summaries[p]) for p in ("mu", "tau", "theta_new", "I2"))
    big = result.studies.iloc[-1]
    assert big["theta_mean"] == pytest.approx(big["yi"], abs=0.01)  # barely shrunk
    others = result.studies.iloc[:-1]
    assert (others["theta_mean"] < others["yi"]).all()  # the small studies are pulled down
    assert result.summaries["tau"]["q025"] > 0.05  # heterogeneity is recognised, not hidden by the big study


def test_extreme_smds_are_finite_and_the_default_mu_prior_shrinks_them(tmp_path):
    rows = [(20.0 + d, 1.0, 8, 0.0, 1.0, 8) for d in (-0.5, 0.0, 0.5)]
    path = _arms_dataset(tmp_path, rows)
    problems = validate_dataset(path)
    assert not errors(problems)
    g = compute_effects(load_dataset(path)).data["yi"].to_numpy()
    assert np.all(np.isfinite(g)) and np.all(g > 17)
    default = _exact(path)
    wide = _exact(path, priors=PriorSet(mu=PriorSpec.parse("normal:0:100")))
    assert _finite(default.summaries["mu"]) and _finite(wide.summaries["mu"])
    assert default.summaries["mu"]["mean"] < g.mean() - 3  # the N(0, 3^2) prior is informative at g ~ 20
    assert wide.summaries["mu"]["mean"] == pytest.approx(g.mean(), abs=0.7)


def test_two_animals_per_arm_is_valid_and_j_is_finite(tmp_path):
    path = _arms_dataset(tmp_path, [(1.0, 0.5, 2, 0.5, 0.5, 2), (0.9, 0.4, 2, 0.4, 0.6, 3)])
    assert not errors(validate_dataset(path))
    table = compute_effects(load_dataset(path))
    assert correction_j(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-12)
    yi, vi = hedges_g(1.0, 0.5, 2, 0.5, 0.5, 2)
    assert yi == pytest.approx(1 / math.sqrt(math.pi), rel=1e-12) and vi == pytest.approx(1.0 + 1 / (8 * math.pi))
    assert table.data["yi"].iloc[0] == pytest.approx(yi) and np.all(np.isfinite(table.data[["yi", "vi"]]))
    assert _finite(_exact(path).summaries["mu"])


def test_one_animal_per_arm_is_an_error(tmp_path):
    path = _arms_dataset(tmp_path, [(1.0, 0.5, 1, 0.5, 0.5, 2)])
    found = errors(validate_dataset(path))
    assert [(p.file, p.line, p.column) for p in found] == [("arms.csv", 3, "n")]


# --- declarations ---------------------------------------------------------------------------------


def test_outcome_in_arms_but_not_declared_is_a_located_error(tmp_path, capsys):
    arms = ARMS + "C2022,ovx,control,BV_TV,20,3,,10,\nC2022,ev,treatment,BV_TV,25,3,,10,\n"
    path = write_dataset(tmp_path, arms=arms)
    found = errors(validate_dataset(path))
    assert [(p.line, p.column) for p in found] == [(12, "outcome"), (13, "outcome")]
    assert "'BV_TV' is not declared in dataset.toml" in found[0].message
    assert main(["validate", str(path)]) == 1
    assert "arms.csv:12 [outcome]" in capsys.readouterr().err


def test_moderator_level_with_a_single_study_is_fitted_with_a_note(tmp_path):
    path = _effects_dataset(tmp_path, [(0.8, 0.1), (0.6, 0.1), (0.2, 0.1), (0.9, 0.1), (0.7, 0.1)])
    studies = "study,species,duration_weeks\nS0,rat,4\nS1,rat,5\nS2,mouse,6\nS3,rat,7\nS4,rat,8\n"
    (path / "studies.csv").write_text(studies, encoding="utf-8")
    result = fit_meta_regression(load_dataset(path), "BMD", moderators=["species"], engine="exact")
    assert [s["level"] for s in result.subgroups] == ["rat", "mouse"]
    assert all(_finite({k: v for k, v in s.items() if isinstance(v, float)}) for s in result.subgroups)
    assert any("single study (S2)" in note for note in result.notes)
    assert "single study" in str(result)


# --- a study with only sham and control arms --------------------------------------------------------


def test_study_with_only_sham_and_control_contributes_nothing_and_says_so(tmp_path):
    arms = ARMS + "D2023,sham,sham,BMD,0.30,0.03,,8,\nD2023,ovx,control,BMD,0.22,0.03,,8,\n"
    studies = (
        "study,species,duration_weeks,rob_sequence_generation\nA2020,rat,8,low\nB2021,mouse,4,unclear\n"
        "C2022,rat,12,high\nD2023,rat,6,low\n"
    )
    path = write_dataset(tmp_path, arms=arms, studies=studies)
    problems = validate_dataset(path)
    assert not errors(problems)
    warned = [p for p in warnings_of(problems) if "D2023" in p.message]
    assert [(p.file, p.line, p.column) for p in warned] == [("arms.csv", 12, "role")]
    assert "contributes nothing" in warned[0].message
    dataset = load_dataset(path)
    assert len(dataset.arms) == 12  # its rows are kept (nothing is dropped on loading)...
    table = compute_effects(dataset)
    assert "D2023" not in set(table.data["study"])  # ...but they give no comparison
    assert "D2023" not in set(study_effects(table, "BMD")["study"])
    assert _exact(path).k == 3


def test_study_without_any_data_row_is_a_warning(tmp_path):
    studies = "study,species,duration_weeks\nA2020,rat,8\nB2021,mouse,4\nC2022,rat,12\nE2024,mouse,5\n"
    problems = validate_dataset(write_dataset(tmp_path, studies=studies))
    assert not errors(problems)
    assert [(p.file, p.line, p.column) for p in warnings_of(problems)] == [("studies.csv", 5, "study")]


def test_helpers_dataset_stays_free_of_warnings(tmp_path):
    """The sham arm of A2020 is not a problem: A2020 has a treatment arm for that outcome."""
    assert validate_dataset(write_dataset(tmp_path, toml=TOML)) == []
