"""Hedges' g with metafor's "AV" sampling variance against ``escalc(measure="SMD", vtype="AV")``.

Source: R 4.2.2, metafor 3.8-1, ``escalc(measure="SMD", m1i, sd1i, n1i, m2i, sd2i, n2i, vtype="AV")``
called once per outcome (metafor averages g over all rows of a call; evmeta over an outcome's
comparisons), group 1 = treatment; script ``tests/reference_data/metafor_escalc_smd_av.R``, output
``tests/reference_data/metafor_escalc_smd_av.json``. Data: Normand S-LT (1999), Statistics in
Medicine 18:321-359 (metadat ``dat.normand1999``), the small dataset of ``tests/helpers.py`` and
the SIMULATED flagship dataset ``data/bmsc_ev_osteoporosis``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.config import DATA_DIR
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.smd import average_variance, hedges_g, weighted_mean_effect
from tests.helpers import write_dataset
from tests.tolerances import EFFECT_SIZE_ABS

REFERENCE = json.loads(
    (Path(__file__).parent / "reference_data" / "metafor_escalc_smd_av.json").read_text(encoding="utf-8")
)


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in rows]) for k in ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i", "yi", "vi")}


def test_average_variance_matches_metafor_normand1999():
    ref = REFERENCE["normand1999"]
    c = _columns(ref["rows"])
    yi, _ = hedges_g(c["m1i"], c["sd1i"], c["n1i"], c["m2i"], c["sd2i"], c["n2i"])
    vi, g_w = average_variance(yi, c["n1i"], c["n2i"])
    assert g_w == pytest.approx(ref["mnwyi"], abs=EFFECT_SIZE_ABS)
    np.testing.assert_allclose(yi, c["yi"], rtol=0, atol=EFFECT_SIZE_ABS)
    np.testing.assert_allclose(vi, c["vi"], rtol=0, atol=EFFECT_SIZE_ABS)


def test_dataset_pipeline_av_matches_metafor_normand1999():
    table = compute_effects(load_dataset(DATA_DIR / "normand1999"), vtype="AV")
    assert table.vtype == "AV"
    data = table.data.set_index("study")
    for row in REFERENCE["normand1999"]["rows"]:
        assert data.at[row["study"], "yi"] == pytest.approx(row["yi"], abs=EFFECT_SIZE_ABS)
        assert data.at[row["study"], "vi"] == pytest.approx(row["vi"], abs=EFFECT_SIZE_ABS)


@pytest.mark.parametrize("name", ["tiny", "bmsc_ev_osteoporosis"])
def test_dataset_pipeline_av_matches_metafor_per_outcome(tmp_path, name):
    path = write_dataset(tmp_path) if name == "tiny" else DATA_DIR / name
    data = compute_effects(load_dataset(path), vtype="AV").data.set_index(["study", "outcome", "comparison"])
    n_rows = 0
    for outcome, ref in REFERENCE[name].items():
        for row in ref["rows"]:
            key = (row["study"], outcome, row["arm"])
            assert data.at[key, "yi"] == pytest.approx(row["yi"], abs=EFFECT_SIZE_ABS)
            assert data.at[key, "vi"] == pytest.approx(row["vi"], abs=EFFECT_SIZE_ABS)
            n_rows += 1
    assert n_rows == len(data)  # every comparison of the dataset is checked


def test_av_shared_control_covariance_uses_the_weighted_mean_effect(tmp_path):
    """B2021's two arms share control ovx (n 6): Cov = 1/n_c + g_w^2 (n_c - 1) / (2 m_a m_b), g_w of BMD."""
    table = compute_effects(load_dataset(write_dataset(tmp_path)), vtype="AV")
    names, cov = table.covariance["B2021/BMD/ovx"]
    assert names == ("ev_low", "ev_high")
    g_w = REFERENCE["tiny"]["BMD"]["mnwyi"]
    m_low, m_high = 6 + 6 - 2, 7 + 6 - 2
    assert cov[0, 1] == pytest.approx(1 / 6 + g_w**2 * 5 / (2 * m_low * m_high), abs=EFFECT_SIZE_ABS)
    assert cov[1, 0] == cov[0, 1]
    bmd = table.data[table.data["outcome"] == "BMD"]
    assert weighted_mean_effect(bmd["yi"], bmd["n_treatment"], bmd["n_control"]) == pytest.approx(
        g_w, abs=EFFECT_SIZE_ABS
    )


def test_av_is_rejected_for_other_measures(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path))
    with pytest.raises(ValueError, match="vtype"):
        compute_effects(dataset, vtype="UB")
    with pytest.raises(ValueError, match="SMDs computed from arm data"):
        compute_effects(dataset, "ROM", vtype="AV")
