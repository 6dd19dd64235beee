"""Forest plot and pooled summary plot: the figures hold the right marks, numbers and labels."""

from __future__ import annotations

import dataclasses
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from analysis.config import DATA_DIR
from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.plots.forest import POOLED_LABEL, PREDICTION_LABEL, Z975, forest_plot, pooled_summary_plot
from analysis.results.random_effects import MetaAnalysisResult
from tests.helpers import write_dataset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def normand() -> MetaAnalysisResult:
    return fit_random_effects(load_dataset(DATA_DIR / "normand1999"), "length_of_stay", engine="exact")


@pytest.fixture(scope="module")
def bone() -> list[MetaAnalysisResult]:
    dataset = load_dataset(DATA_DIR / "bmsc_ev_osteoporosis")
    return [fit_random_effects(dataset, outcome, engine="exact") for outcome in dataset.outcomes]


@pytest.fixture(scope="module")
def bmd(bone: list[MetaAnalysisResult]) -> MetaAnalysisResult:
    return next(r for r in bone if r.outcome.id == "BMD")


def _by_gid(fig: Figure, gid: str) -> list[Artist]:
    return fig.findobj(lambda a: a.get_gid() == gid)


def _one(fig: Figure, gid: str) -> Artist:
    found = _by_gid(fig, gid)
    assert len(found) == 1, f"expected one artist {gid!r}, found {len(found)}"
    return found[0]


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def _row_labels(fig: Figure) -> list[str]:
    ax = _one(fig, "forest")
    assert isinstance(ax, Axes)
    return [t.get_text() for t in ax.get_yticklabels()]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)  # low resolution keeps the test fast
    return buffer.getvalue()


def _side(fig: Figure, gid: str) -> str:
    """'left' or 'right': where the rendered text lies relative to the centre of the plot axes."""
    fig.draw_without_rendering()
    box = _one(fig, gid).get_window_extent()
    plot = _one(fig, "forest").get_window_extent()
    centre = (box.x0 + box.x1) / 2
    return "left" if centre < (plot.x0 + plot.x1) / 2 else "right"


def _no_vertical_overlap(texts: list[Text]) -> bool:
    boxes = sorted((t.get_window_extent() for t in texts), key=lambda b: b.y0)
    return all(lower.y1 <= upper.y0 + 0.5 for lower, upper in itertools.pairwise(boxes))


def _effects_dataset(root: Path, k: int, *, label_chars: int) -> Path:
    """An effects-level dataset with k studies and long study labels."""
    rng = np.random.default_rng(7)
    names = [f"Study {i:02d} " + "x" * max(0, label_chars - 9) for i in range(k)]
    toml = (
        'name = "many"\ntitle = "Many studies"\nprovenance = "published-example"\ncitation = "fixture"\n'
        'effect_measure = "SMD"\n\n[outcomes.BMD]\nlabel = "Bone mineral density"\nunit = "g/cm2"\ndirection = 1\n'
    )
    studies = "study\n" + "".join(f"{n}\n" for n in names)
    effects = "study,outcome,yi,vi\n" + "".join(
        f"{n},BMD,{rng.normal(0.8, 0.6):.4f},{rng.uniform(0.05, 0.6):.4f}\n" for n in names
    )
    return write_dataset(root, toml=toml, studies=studies, arms=None, effects=effects)


# --- forest_plot --------------------------------------------------------------------------------


def test_forest_rows_are_studies_then_pooled_then_prediction(normand):
    fig = forest_plot(normand)
    assert _row_labels(fig) == [*normand.studies["study"], POOLED_LABEL, PREDICTION_LABEL]
    assert len(_row_labels(fig)) == normand.k + 2


def test_forest_diamond_spans_mu_eti_and_is_centred_at_mean(normand):
    xy = _one(forest_plot(normand), "pooled_diamond").get_xy()
    mu = normand.summaries["mu"]
    assert xy[:, 0].min() == pytest.approx(mu["q025"]) and xy[:, 0].max() == pytest.approx(mu["q975"])
    assert np.median(xy[:, 0]) == pytest.approx(mu["mean"])


def test_forest_prediction_line_spans_theta_new_eti(bmd):
    line = _one(forest_plot(bmd), "prediction_interval")
    new = bmd.summaries["theta_new"]
    np.testing.assert_allclose(sorted(line.get_xdata()), [new["q025"], new["q975"]])
    np.testing.assert_allclose(line.get_ydata(), [bmd.k + 0.6 + 1.0] * 2)  # its own row below the diamond


def test_forest_observed_and_shrunken_marks_match_the_result(normand):
    fig = forest_plot(normand)
    s = normand.studies
    np.testing.assert_allclose(_one(fig, "observed").get_offsets()[:, 0], s["yi"])
    np.testing.assert_allclose(_one(fig, "shrunken").get_offsets()[:, 0], s["theta_mean"])
    observed_ci = np.array([seg[:, 0] for seg in _one(fig, "observed_ci").get_segments()])
    half = Z975 * np.sqrt(s["vi"].to_numpy())
    np.testing.assert_allclose(observed_ci, np.c_[s["yi"] - half, s["yi"] + half])
    eti = np.array([seg[:, 0] for seg in _one(fig, "shrunken_eti").get_segments()])
    np.testing.assert_allclose(eti, s[["theta_q025", "theta_q975"]].to_numpy())
    # The shrunken mark sits just below the observed one, on the same row (y axis is inverted).
    y_obs, y_shr = _one(fig, "observed").get_offsets()[:, 1], _one(fig, "shrunken").get_offsets()[:, 1]
    assert np.all((y_shr > y_obs) & (y_shr - y_obs < 0.5))
    sizes = _one(fig, "observed").get_sizes()
    assert sizes[np.argmin(s["vi"])] == sizes.max()  # square area grows with the weight 1/vi


def test_forest_table_columns_hold_the_numbers(normand):
    texts = _texts(forest_plot(normand))
    assert "g [95% CI]" in texts and "θ [95% ETI]" in texts
    row = normand.studies.iloc[0]
    half = Z975 * np.sqrt(row["vi"])
    expected_g = f"{row['yi']:.2f} [{row['yi'] - half:.2f}, {row['yi'] + half:.2f}]".replace("-", "\u2212")
    expected_t = f"{row['theta_mean']:.2f} [{row['theta_q025']:.2f}, {row['theta_q975']:.2f}]".replace("-", "\u2212")
    assert expected_g in texts and expected_t in texts


def test_forest_titles_name_outcome_k_engine_priors_and_interval_kind(normand):
    fig = forest_plot(normand)
    ax = _one(fig, "forest")
    assert "Length of hospital stay" in fig.get_suptitle() and "k = 9" in fig.get_suptitle()
    subtitle = ax.get_title(loc="left")
    assert "exact" in subtitle and "normal:0:3" in subtitle and "halfnormal:1" in subtitle
    assert "eti95" in fig.get_supxlabel() and "95% equal-tailed" in fig.get_supxlabel()
    assert ax.get_xlabel() == "Hedges' g (SMD)"
    assert {"observed g [95% CI]", "shrunken θ_i, mean [95% ETI]"} <= {
        t.get_text() for t in ax.get_legend().get_texts()
    }


@pytest.mark.parametrize("outcome, side", [("length_of_stay", "left"), ("BMD", "right")])
def test_benefit_annotation_on_the_side_of_benefit(normand, bmd, outcome, side):
    result = normand if outcome == "length_of_stay" else bmd
    fig = forest_plot(result)
    assert _one(fig, "benefit_annotation").get_text().count("favours treatment") == 1
    assert _side(fig, "benefit_annotation") == side
    assert _side(fig, "control_annotation") != side


def test_simulated_marker_only_for_simulated_data(normand, bmd):
    assert any("SIMULATED" in t for t in _texts(forest_plot(bmd)))
    assert _one(forest_plot(bmd), "simulated_marker").get_text() == "SIMULATED DATA"
    assert not any("SIMULATED" in t.upper() for t in _texts(forest_plot(normand)))


def test_forest_sort_orders_rows_by_observed_effect(normand):
    labels = _row_labels(forest_plot(normand, sort=True))[: normand.k]
    assert labels == list(normand.studies.sort_values("yi")["study"])


def test_forest_other_measure_labels_axis_and_column(normand):
    fig = forest_plot(normand, measure="logRR")
    assert _one(fig, "forest").get_xlabel() == "log risk ratio" and "yi [95% CI]" in _texts(fig)


def test_forest_nuts_result_without_posterior(bmd):
    nuts = dataclasses.replace(
        bmd, engine="nuts", posterior=None, settings={"seed": 3, "chains": 4, "draws": 1000, "tune": 1000}
    )
    fig = forest_plot(nuts)
    assert "NUTS" in _one(fig, "forest").get_title(loc="left") and "seed 3" in _one(fig, "forest").get_title(loc="left")
    assert _png(fig).startswith(PNG_SIGNATURE)


def test_forest_single_study(tmp_path):
    result = fit_random_effects(load_dataset(write_dataset(tmp_path)), "Tb_Sp", engine="exact")
    assert result.k == 1
    fig = forest_plot(result)
    assert len(_row_labels(fig)) == 3
    assert _side(fig, "benefit_annotation") == "left"  # Tb_Sp: lower is better
    assert _png(fig).startswith(PNG_SIGNATURE)


def test_forest_forty_studies_with_long_labels_has_no_overlaps(tmp_path, normand):
    result = fit_random_effects(load_dataset(_effects_dataset(tmp_path, 40, label_chars=70)), "BMD", engine="exact")
    fig = forest_plot(result)
    labels = _row_labels(fig)
    assert len(labels) == 42 and all(len(s) <= 48 for s in labels) and labels[0].endswith("…")
    assert fig.get_figheight() > forest_plot(normand).get_figheight() + 8  # height scales with k
    fig.draw_without_rendering()
    ax, table = _one(fig, "forest"), _one(fig, "table")
    assert _no_vertical_overlap(ax.get_yticklabels())
    fig_box, plot_box = fig.bbox, ax.get_window_extent()
    for text in table.texts:
        box = text.get_window_extent()
        assert box.x0 >= plot_box.x1 and box.x1 <= fig_box.x1  # table right of the plot, inside the figure
    assert all(t.get_window_extent().x0 >= 0 for t in ax.get_yticklabels())


@pytest.mark.parametrize("plot", ["forest", "pooled"])
def test_direction_annotations_and_legend_sit_below_the_x_label(normand, bone, plot):
    fig = forest_plot(normand) if plot == "forest" else pooled_summary_plot([normand, *bone])
    fig.draw_without_rendering()
    ax = _one(fig, "forest")
    label = ax.xaxis.label.get_window_extent()
    for gid in ("benefit_annotation", "control_annotation"):
        assert _one(fig, gid).get_window_extent().y1 <= label.y0
    assert ax.get_legend().get_window_extent().y1 <= _one(fig, "benefit_annotation").get_window_extent().y0


def test_forest_renders_png_without_warnings(normand, bone):
    for result in [normand, *bone]:
        fig = forest_plot(result)
        assert isinstance(fig, Figure) and fig.canvas.manager is None  # not registered with pyplot
        assert _png(fig).startswith(PNG_SIGNATURE)


# --- pooled_summary_plot ------------------------------------------------------------------------


def test_pooled_rows_are_outcomes_with_flipped_ones_marked(bone):
    labels = _row_labels(pooled_summary_plot(bone))
    assert len(labels) == len(bone) == 7
    assert labels == [r.outcome.label + (" †" if r.outcome.direction < 0 else "") for r in bone]


def test_pooled_is_benefit_oriented(bone):
    fig = pooled_summary_plot(bone)
    diamonds, lines = _by_gid(fig, "pooled_diamond"), _by_gid(fig, "prediction_interval")
    assert len(diamonds) == len(lines) == len(bone)
    for result, diamond, line in zip(bone, diamonds, lines):
        d, mu, new = result.outcome.direction, result.summaries["mu"], result.summaries["theta_new"]
        xs = diamond.get_xy()[:, 0]
        np.testing.assert_allclose([xs.min(), xs.max()], sorted([d * mu["q025"], d * mu["q975"]]))
        np.testing.assert_allclose(sorted(line.get_xdata()), sorted([d * new["q025"], d * new["q975"]]))
        assert np.median(xs) > 0  # every pooled effect here favours treatment: right of zero
    xlabel = _one(fig, "forest").get_xlabel()
    assert "benefit-oriented" in xlabel and "lower-is-better outcomes sign-flipped" in xlabel and "Tb_Sp" in xlabel


def test_pooled_table_k_and_prob_benefit(bone):
    texts = _texts(pooled_summary_plot(bone))
    assert {"k", "P(benefit)", "μ [95% ETI]"} <= set(texts)
    for result in bone:
        assert str(result.k) in texts
    ct_th = next(r for r in bone if r.outcome.id == "Ct_Th")
    assert f"{ct_th.prob_benefit:.3f}" in texts and ">0.999" in texts


def test_pooled_benefit_right_and_simulated_marker(bone, normand):
    fig = pooled_summary_plot(bone)
    assert _side(fig, "benefit_annotation") == "right"
    assert _one(fig, "simulated_marker").get_text() == "SIMULATED DATA"
    published = pooled_summary_plot([normand])
    assert _side(published, "benefit_annotation") == "right"  # direction -1, but the axis is flipped
    assert not any("SIMULATED" in t.upper() for t in _texts(published))
    assert _png(fig).startswith(PNG_SIGNATURE) and _png(published).startswith(PNG_SIGNATURE)


def test_pooled_requires_results():
    with pytest.raises(ValueError, match="at least one"):
        pooled_summary_plot([])
