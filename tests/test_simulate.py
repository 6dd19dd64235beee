"""Tests of the simulated flagship dataset (``analysis.dataset.simulate``): contract, determinism,
atomic writing, the Tb.N reporting selection and recovery of the true effects."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import gammaln

import analysis.atomic as atomic_mod
import analysis.dataset.simulate as sim_mod
from analysis.dataset.simulate import DEFAULT_SEED, SimulatedDataset, simulate_dataset, write_dataset

FILES = ("dataset.toml", "studies.csv", "arms.csv", "truth.json")
REPO_DATA = Path(__file__).resolve().parents[1] / "data" / "bmsc_ev_osteoporosis"
TRUTH_KEYS = {
    "seed",
    "generator",
    "note",
    "mu",
    "tau",
    "tau_residual",
    "moderators",
    "between_study_correlation",
    "within_animal_correlation",
    "study_effects",
    "selection",
    "n_animals",
    "n_studies",
}
#: Recovery bound in standard errors (normal approximation): 3 SE gives a false-alarm rate of
#: about 0.3% per check for a correct generator, while a wrong sign, a unit or SEM/SD mix-up
#: or a mis-scaled effect moves the average by far more than 3 SE.
RECOVERY_SE_MULTIPLE = 3.0


@pytest.fixture(scope="module")
def default_sim() -> SimulatedDataset:
    return simulate_dataset()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, default_sim: SimulatedDataset) -> Path:
    """The default dataset written to disk and read back through the files."""
    return write_dataset(default_sim, tmp_path_factory.mktemp("sim") / "bmsc_ev_osteoporosis")


@pytest.fixture(scope="module")
def arms(written: Path) -> pd.DataFrame:
    return pd.read_csv(written / "arms.csv")


@pytest.fixture(scope="module")
def truth(written: Path) -> dict:
    return json.loads((written / "truth.json").read_text(encoding="utf-8"))


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def _hedges_g(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int) -> tuple[float, float]:
    """Hedges' g (exact J) and its large-sample variance (metafor escalc SMD, vtype LS)."""
    m = n1 + n2 - 2
    sp = np.sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / m)
    j = np.exp(gammaln(m / 2) - 0.5 * np.log(m / 2) - gammaln((m - 1) / 2))
    g = j * (m1 - m2) / sp
    return g, 1 / n1 + 1 / n2 + g**2 / (2 * (n1 + n2))


def _study_g(arms: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """Per study: mean of its EV-arm g's and of their variances (SEM -> SD by sem*sqrt(n))."""
    rows = arms[arms["outcome"] == outcome].copy()
    rows["sd_"] = rows["sd"].fillna(rows["sem"] * np.sqrt(rows["n"]))
    out = []
    for study, d in rows.groupby("study", sort=True):
        gs = []
        for _, t in d[d["role"] == "treatment"].iterrows():
            c = d[(d["arm"] == t["control_arm"]) & (d["role"] == "control")].iloc[0]
            gs.append(_hedges_g(t["mean"], t["sd_"], t["n"], c["mean"], c["sd_"], c["n"]))
        out.append({"study": study, "g": np.mean([g for g, _ in gs]), "v": np.mean([v for _, v in gs])})
    return pd.DataFrame(out)


# --- determinism -----------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = write_dataset(simulate_dataset(7), tmp_path / "a")
    b = write_dataset(simulate_dataset(7), tmp_path / "b")
    assert _bytes(a) == _bytes(b)


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    a = _bytes(write_dataset(simulate_dataset(1), tmp_path / "a"))
    b = _bytes(write_dataset(simulate_dataset(2), tmp_path / "b"))
    assert a["arms.csv"] != b["arms.csv"]
    assert a["truth.json"] != b["truth.json"]


def test_committed_dataset_is_reproducible(tmp_path: Path) -> None:
    if not REPO_DATA.is_dir():
        pytest.skip("data/bmsc_ev_osteoporosis has not been generated")
    fresh = write_dataset(simulate_dataset(DEFAULT_SEED), tmp_path / "fresh")
    assert _bytes(REPO_DATA) == _bytes(fresh)


# --- data contract ----------------------------------------------------------------------------------


def test_dataset_toml(written: Path) -> None:
    meta = tomllib.loads((written / "dataset.toml").read_text(encoding="utf-8"))
    assert meta["name"] == "bmsc_ev_osteoporosis" and meta["provenance"] == "simulated"
    assert meta["citation"].startswith("SIMULATED") and meta["effect_measure"] == "SMD"
    assert meta["seed"] == DEFAULT_SEED and meta["generator"] == "analysis.dataset.simulate"
    assert list(meta["outcomes"]) == ["BMD", "BV_TV", "Tb_N", "Tb_Sp", "Tb_Th", "Ct_Th", "ultimate_load"]
    assert {k: v["direction"] for k, v in meta["outcomes"].items() if v["direction"] == -1} == {"Tb_Sp": -1}
    assert meta["moderators"]["species"] == {"type": "categorical", "reference": "rat", "levels": ["rat", "mouse"]}
    assert meta["moderators"]["engineered"]["reference"] == "native"
    assert meta["moderators"]["duration_weeks"] == {"type": "numeric"}


def test_studies_table(written: Path) -> None:
    studies = pd.read_csv(written / "studies.csv")
    assert len(studies) == 10 and studies["study"].is_unique
    assert all(s.startswith("SimStudy") for s in studies["study"])
    assert set(studies["species"]) == {"rat", "mouse"} and set(studies["engineered"]) == {"native", "engineered"}
    rob = [c for c in studies.columns if c.startswith("rob_")]
    assert len(rob) == 10
    assert set(studies[rob].to_numpy().ravel()) <= {"low", "high", "unclear"}


def test_355_animals_and_arm_sizes(arms: pd.DataFrame) -> None:
    per_arm = arms.drop_duplicates(["study", "arm"])
    assert arms["study"].nunique() == 10
    assert per_arm["n"].sum() == 355
    assert per_arm["n"].between(5, 10).all()
    # an arm's n is the same for every outcome (one animal measured on all reported outcomes)
    assert (arms.groupby(["study", "arm"])["n"].nunique() == 1).all()


def test_each_study_has_sham_control_and_one_or_two_treatments(arms: pd.DataFrame) -> None:
    for _, d in arms.drop_duplicates(["study", "arm"]).groupby("study"):
        roles = d["role"].value_counts()
        assert roles.get("sham") == 1 and roles.get("control") == 1
        assert roles.get("treatment") in (1, 2)


def test_exactly_one_of_sd_sem_per_row_and_study_level(arms: pd.DataFrame) -> None:
    assert (arms["sd"].notna() ^ arms["sem"].notna()).all()
    assert (arms[["mean", "sd", "sem"]].fillna(1.0) > 0).all().all()
    assert (arms.groupby("study")["sem"].apply(lambda s: s.notna().nunique()) == 1).all()
    assert 1 <= arms.loc[arms["sem"].notna(), "study"].nunique() < 10


def test_treatment_rows_name_an_existing_control(arms: pd.DataFrame) -> None:
    controls = set(map(tuple, arms.loc[arms["role"] == "control", ["study", "outcome", "arm"]].to_numpy()))
    treat = arms[arms["role"] == "treatment"]
    assert treat["control_arm"].notna().all()
    assert all((s, o, c) in controls for s, o, c in treat[["study", "outcome", "control_arm"]].to_numpy())
    assert arms.loc[arms["role"] != "treatment", "control_arm"].isna().all()


def test_reported_values_have_four_significant_digits(arms: pd.DataFrame) -> None:
    values = pd.concat([arms["mean"], arms["sd"], arms["sem"]]).dropna().to_numpy()
    assert np.allclose(values, [float(f"{v:.4g}") for v in values], rtol=0, atol=0)
    assert arms["unit"].notna().all() and arms["site"].notna().all() and (arms["source"] == "simulated").all()


def test_cortical_and_strength_outcomes_reported_by_few(arms: pd.DataFrame) -> None:
    k = arms.groupby("outcome")["study"].nunique()
    assert k["Ct_Th"] < k["BMD"] and k["ultimate_load"] < k["BMD"]
    assert k["BV_TV"] == 10


def test_truth_keys(truth: dict) -> None:
    assert TRUTH_KEYS <= set(truth)
    assert truth["n_animals"] == 355 and truth["n_studies"] == 10 and truth["seed"] == DEFAULT_SEED
    assert "SIMULATED" in truth["note"]
    outcomes = truth["within_animal_correlation"]["outcomes"]
    for key in ("within_animal_correlation", "between_study_correlation"):
        mat = np.array(truth[key]["matrix"])
        assert mat.shape == (7, 7) and np.allclose(mat, mat.T) and np.linalg.eigvalsh(mat).min() > 0
    tau2 = {k: truth["tau_residual"][k] ** 2 + truth["moderator_variance"] for k in outcomes}
    assert all(truth["tau"][k] == pytest.approx(np.sqrt(tau2[k]), abs=1e-6) for k in outcomes)
    assert set(truth["study_effects"]) == set(truth["selection"]["studies"])


# --- Tb.N outcome-reporting selection --------------------------------------------------------------


def test_tb_n_missing_for_selection_affected_studies(arms: pd.DataFrame, truth: dict) -> None:
    sel = truth["selection"]
    reporting = set(arms.loc[arms["outcome"] == "Tb_N", "study"])
    assert sel["omitted_studies"], "the default dataset must show the Tb.N reporting selection"
    assert not reporting & set(sel["omitted_studies"] + sel["not_planned_studies"])
    planned = {s for s, r in sel["studies"].items() if r["planned"]}
    assert reporting == planned - set(sel["omitted_studies"])
    assert all(sel["studies"][s]["p_value"] > sel["alpha"] for s in sel["omitted_studies"])


# --- atomic writing --------------------------------------------------------------------------------


def test_existing_folder_needs_overwrite(tmp_path: Path) -> None:
    out = write_dataset(simulate_dataset(1), tmp_path / "ds")
    with pytest.raises(FileExistsError):
        write_dataset(simulate_dataset(2), out)
    write_dataset(simulate_dataset(2), out, overwrite=True)
    assert _bytes(out) == _bytes(write_dataset(simulate_dataset(2), tmp_path / "ref"))
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(simulate_dataset(1), empty)  # an empty folder is not "existing data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "empty", "ref"]


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = sim_mod.write_text_atomic, []

    def failing(path: Path, text: str) -> None:
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        real(path, text)

    monkeypatch.setattr(sim_mod, "write_text_atomic", failing)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(simulate_dataset(1), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = write_dataset(simulate_dataset(1), tmp_path / "ds")
    before = _bytes(out)
    real_rename = os.rename

    def failing_rename(src: os.PathLike, dst: os.PathLike) -> None:
        if Path(src).name.startswith(".ds.tmp-"):
            raise OSError("rename failed (simulated)")
        real_rename(src, dst)

    monkeypatch.setattr(atomic_mod.os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        write_dataset(simulate_dataset(2), out, overwrite=True)
    monkeypatch.undo()
    assert _bytes(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


# --- recovery of the truth -------------------------------------------------------------------------


def test_bmd_average_g_recovers_mu(arms: pd.DataFrame, truth: dict) -> None:
    """The simple average of the studies' observed Hedges' g estimates mu_BMD.

    Over the k reporting studies, gbar - mu has variance about (tau^2 + vbar) / k: tau (the
    marginal between-study SD from truth.json, which includes the moderator spread, so it also
    covers the moderator mix of the reporting subset) plus the typical sampling variance vbar
    of a study's g (an upper bound: averaging a study's two EV arms only lowers it). BMD is not
    subject to reporting selection, so gbar is unbiased for mu up to the O(1/n) bias of g.
    """
    g = _study_g(arms, "BMD")
    k = len(g)
    se = np.sqrt((truth["tau"]["BMD"] ** 2 + g["v"].mean()) / k)
    assert abs(g["g"].mean() - truth["mu"]["BMD"]) <= RECOVERY_SE_MULTIPLE * se


@pytest.mark.parametrize("outcome", ["BMD", "BV_TV", "Tb_Sp", "Tb_Th", "Ct_Th", "ultimate_load"])
def test_average_g_matches_true_study_effects(arms: pd.DataFrame, truth: dict, outcome: str) -> None:
    """Conditional on the true study effects only sampling error remains: gbar - mean(delta_i)
    has SE about sqrt(vbar / k). Tb_N is excluded: its reported studies are selected on p."""
    g = _study_g(arms, outcome)
    delta = np.mean([truth["study_effects"][s][outcome] for s in g["study"]])
    se = np.sqrt(g["v"].mean() / len(g))
    assert abs(g["g"].mean() - delta) <= RECOVERY_SE_MULTIPLE * se
    assert np.sign(g["g"].mean()) == np.sign(truth["mu"][outcome])
