"""Subgroup plot: the figure holds the right marks, numbers, benefit direction and SIMULATED label."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.text import Text

from analysis.config import DATA_DIR, DEFAULT_DATASET
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.meta_regression import fit_meta_regression, fit_subgroups_one_at_a_time
from analysis.plots.meta_regression import subgroup_plot


def _by_gid(fig: Figure, gid: str) -> list[Artist]:
    return fig.findobj(lambda a: a.get_gid() == gid)


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


@pytest.fixture(scope="module")
def flagship():
    dataset = load_dataset(DEFAULT_DATASET)
    return dataset, compute_effects(dataset)


def test_joint_fit_draws_levels_and_slopes(flagship) -> None:
    dataset, table = flagship
    result = fit_meta_regression(dataset, "BV_TV", moderators="all", engine="exact", table=table)
    fig = subgroup_plot(result)
    assert isinstance(fig, Figure)
    (means,) = _by_gid(fig, "subgroup_mean")
    np.testing.assert_allclose(means.get_offsets()[:, 0], [s["mean"] for s in result.subgroups])
    (slopes,) = _by_gid(fig, "slope")
    np.testing.assert_allclose(slopes.get_offsets()[:, 0], [s["mean"] for s in result.slopes])
    (eti,) = _by_gid(fig, "subgroup_eti")
    ends = np.array([seg[:, 0] for seg in eti.get_segments()])
    np.testing.assert_allclose(ends, [[s["q025"], s["q975"]] for s in result.subgroups])
    assert [a.get_gid() for a in fig.axes if a.get_gid()] == ["subgroups", "slopes"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["species", "   rat (ref)", "   mouse", "engineered", "   native (ref)", "   engineered"]
    assert [t.get_text() for t in _by_gid(fig, "benefit_annotation")] == [
        "favours treatment →",
        "more benefit at higher values →",
    ]
    assert [t.get_text() for t in _by_gid(fig, "simulated_marker")] == ["SIMULATED DATA"]
    assert any("eti95" in t for t in _texts(fig)) and any("normal:0:3" in t for t in _texts(fig))


def test_one_at_a_time_lower_is_better_and_not_saved(flagship) -> None:
    dataset, table = flagship
    fits = fit_subgroups_one_at_a_time(dataset, "Tb_Sp", engine="exact", table=table)
    fig = subgroup_plot(fits)
    assert [t.get_text() for t in _by_gid(fig, "benefit_annotation")] == [
        "← favours treatment",
        "← more benefit at higher values",
    ]
    assert "one moderator at a time" in fig.get_suptitle()
    mouse = next(c for c in fits["species"].contrasts if c["level"] == "mouse")
    assert f"{mouse['prob_benefit']:.3f}" in _texts(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)  # renders without pyplot
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_published_example_has_only_slope_panel_and_no_simulated_marker() -> None:
    result = fit_meta_regression(
        load_dataset(DATA_DIR / "raudenbush1985"), "iq_smd", moderators=["weeks_c"], engine="exact"
    )
    fig = subgroup_plot(result)
    assert [a.get_gid() for a in fig.axes if a.get_gid()] == ["slopes"]
    assert _by_gid(fig, "simulated_marker") == [] and _by_gid(fig, "subgroup_mean") == []


def test_rejects_empty_or_mixed_outcomes(flagship) -> None:
    dataset, table = flagship
    with pytest.raises(ValueError, match="same outcome"):
        subgroup_plot({})
    a = fit_meta_regression(dataset, "BMD", moderators=["species"], engine="exact", table=table)
    b = fit_meta_regression(dataset, "BV_TV", moderators=["species"], engine="exact", table=table)
    with pytest.raises(ValueError, match="same outcome"):
        subgroup_plot({"a": a, "b": b})
