"""Forest plots of a Bayesian random-effects meta-analysis, and a pooled summary across outcomes.

:func:`forest_plot` follows metafor's ``forest(..., addpred = TRUE)`` and bayesmeta's
``forestplot`` with shrinkage: one row per study with the observed Hedges' g and its 95% CI,
the shrunken study effect θ_i (posterior mean, 95% ETI) just below it, the pooled μ as a
diamond and the 95% prediction interval for a new study (θ_new) as its own row.
:func:`pooled_summary_plot` puts the pooled μ and θ_new of several outcomes on one
benefit-oriented axis. Both return a :class:`matplotlib.figure.Figure` built without pyplot
(no global state, no display needed) and never save or show it.

Artists that tests and the report look up carry a ``gid``: ``"forest"`` / ``"table"`` (axes),
``"observed"``, ``"observed_ci"``, ``"shrunken"``, ``"shrunken_eti"``, ``"pooled_diamond"``,
``"prediction_interval"``, ``"benefit_annotation"``, ``"simulated_marker"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon
from matplotlib.transforms import ScaledTranslation

from analysis.config import INTERVAL_KIND
from analysis.plots.labels import display_label
from analysis.results.random_effects import MetaAnalysisResult

#: Normal quantile of the observed-effect confidence intervals (95%, two-sided).
Z975: float = 1.959964
#: Axis labels of the effect measures (``dataset.toml`` ``effect_measure``); others are shown as given.
MEASURE_LABELS: dict[str, str] = {
    "SMD": "Hedges' g (SMD)",
    "NMD": "normalised mean difference (%)",
    "ROM": "log ratio of means",
    "logRR": "log risk ratio",
    "logOR": "log odds ratio",
}
COLORS: dict[str, str] = {
    "observed": "#222222",
    "shrunken": "#0072B2",
    "pooled": "#333333",
    "prediction": "#D55E00",
    "simulated": "#C00000",
    "grid": "#BBBBBB",
}
ROW_INCH: float = 0.30
MAX_LABEL_CHARS: int = 48
POOLED_LABEL: str = "Pooled μ (random effects)"
PREDICTION_LABEL: str = "Prediction for a new study (θ_new)"
_OFFSET: float = 0.17  # vertical offset of the observed (above) and shrunken (below) marks in a row


def forest_plot(result: MetaAnalysisResult, *, sort: bool = False, measure: str = "SMD") -> Figure:
    """Forest plot with observed effects, shrunken study effects, pooled μ and prediction interval.

    Parameters
    ----------
    result : MetaAnalysisResult
        A fit of one outcome (either engine; the posterior draws are not needed).
    sort : bool
        Order studies by observed effect (ascending) instead of dataset order.
    measure : str
        Effect measure of the dataset (``Dataset.effect_measure``), for the axis label; the
        observed column is headed ``g`` for ``"SMD"`` and ``yi`` otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        Rows, top to bottom: the k studies, the pooled μ (diamond from q025 to q975, centred at
        the posterior mean) and θ_new (bar from q025 to q975). Squares (area ∝ 1/vi) with lines
        are the observed g ± 1.959964·√vi; circles with lines are θ_i posterior means with 95%
        ETIs. The right-hand table gives both as numbers. The figure is neither saved nor shown.
    """
    studies = result.studies.sort_values("yi", kind="stable") if sort else result.studies
    k = len(studies)
    y = np.arange(k, dtype=float)
    y_pool, y_pred = k + 0.6, k + 1.6
    labels = [_shorten(s) for s in studies["study"].astype(str)] + [POOLED_LABEL, PREDICTION_LABEL]
    fig, ax, tax = _new_figure(k + 2, labels, table_inch=3.5)
    _draw_studies(ax, studies, y)
    _draw_diamond(ax, result.summaries["mu"], y_pool)
    _draw_prediction(ax, result.summaries["theta_new"], y_pred)
    pooled = [result.summaries[p] for p in ("mu", "theta_new")]
    lows = [studies["yi"] - Z975 * np.sqrt(studies["vi"]), studies["theta_q025"], [s["q025"] for s in pooled]]
    highs = [studies["yi"] + Z975 * np.sqrt(studies["vi"]), studies["theta_q975"], [s["q975"] for s in pooled]]
    _format_axes(ax, tax, labels, np.r_[y, y_pool, y_pred], _xlim(lows, highs), separator=k - 0.3)
    ax.set_xlabel(MEASURE_LABELS.get(measure, measure))
    _benefit_annotation(ax, result.outcome.direction)
    _forest_table(tax, studies, y, result, y_pool, y_pred, symbol="g" if measure == "SMD" else "yi")
    _forest_titles(fig, tax, result)
    _legend(ax, forest=True)
    return fig


def caterpillar_plot(result: MetaAnalysisResult, *, measure: str = "SMD") -> Figure:
    """A forest plot that stays readable at any k: studies sorted by observed effect, without labels.

    For meta-analyses of hundreds of comparisons the per-study forest plot (:func:`forest_plot`)
    is a tall figure of its own; this summary shows the same marks compactly: the observed
    effects with their 95% CIs (grey lines, one row per study), the shrunken θ_i (dots), and bands
    for the pooled μ (95% ETI) and the prediction interval θ_new.

    Parameters
    ----------
    result : MetaAnalysisResult
        A fit of one outcome (either engine).
    measure : str
        Effect measure of the dataset, for the axis label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    studies = result.studies.sort_values("yi", kind="stable")
    k = len(studies)
    y = np.arange(k, dtype=float)
    half = Z975 * np.sqrt(studies["vi"].to_numpy(dtype=float))
    yi = studies["yi"].to_numpy(dtype=float)
    fig = Figure(figsize=(9.0, 5.5), layout="constrained")
    ax = fig.subplots()
    mu, pred = result.summaries["mu"], result.summaries["theta_new"]
    ax.axvspan(pred["q025"], pred["q975"], color=COLORS["prediction"], alpha=0.15, lw=0, label="θ_new, 95% ETI")
    ax.axvspan(mu["q025"], mu["q975"], color=COLORS["pooled"], alpha=0.35, lw=0, label="pooled μ, 95% ETI")
    ax.axvline(mu["mean"], color=COLORS["pooled"], lw=1.2)
    ax.hlines(y, yi - half, yi + half, color="#999999", lw=0.6, label="observed effect, 95% CI", gid="observed")
    ax.scatter(studies["theta_mean"], y, s=6, color=COLORS["shrunken"], zorder=3, label="θ_i posterior mean")
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_ylim(-1, k)
    ax.set_yticks([])
    ax.set_ylabel(f"{k} studies, sorted by observed effect")
    # the axis covers the shrunken effects, the prediction interval and the central 95% of the
    # observed intervals: one extreme study must not squeeze the rest (its line is cut at the edge)
    lows = [np.quantile(yi - half, 0.025), studies["theta_q025"], [pred["q025"]]]
    highs = [np.quantile(yi + half, 0.975), studies["theta_q975"], [pred["q975"]]]
    ax.set_xlim(*_xlim([np.ravel(v) for v in lows], [np.ravel(v) for v in highs]))
    ax.set_xlabel(MEASURE_LABELS.get(measure, measure) + " (observed intervals beyond the axis are cut)")
    _benefit_annotation(ax, result.outcome.direction)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"{display_label(result.outcome.label)}: study effects (k = {k}) and the pooled effect "
        f"({result.likelihood_label})",
        fontsize=11,
    )
    return fig


def pooled_summary_plot(results: Sequence[MetaAnalysisResult], *, measure: str = "SMD") -> Figure:
    """Pooled μ (95% ETI) and 95% prediction interval of several outcomes, benefit-oriented.

    Parameters
    ----------
    results : sequence of MetaAnalysisResult
        One fit per outcome (e.g. the seven bone outcomes), plotted top to bottom in this order.
    measure : str
        Effect measure shared by the results, for the axis label.

    Returns
    -------
    matplotlib.figure.Figure
        Every summary is multiplied by the outcome's ``direction`` (intervals flipped for
        lower-is-better outcomes, which are marked †), so right = benefit on every row. The
        table at the right gives μ [95% ETI], k and P(benefit).

    Raises
    ------
    ValueError
        If ``results`` is empty.
    """
    results = list(results)
    if not results:
        raise ValueError("pooled_summary_plot needs at least one result")
    n = len(results)
    y = np.arange(n, dtype=float)
    labels = [_shorten(r.outcome.label) + (" †" if r.outcome.direction < 0 else "") for r in results]
    fig, ax, tax = _new_figure(n, labels, table_inch=3.4)
    lows, highs = [], []
    for yi, r in zip(y, results):
        mu, pred = (
            _oriented(r.summaries["mu"], r.outcome.direction),
            _oriented(r.summaries["theta_new"], r.outcome.direction),
        )
        _draw_prediction(ax, pred, yi)
        _draw_diamond(ax, mu, yi, half_height=0.22)
        lows.append([pred["q025"], mu["q025"]])
        highs.append([pred["q975"], mu["q975"]])
    _format_axes(ax, tax, labels, y, _xlim(lows, highs), separator=None)
    flipped = [r.outcome.id for r in results if r.outcome.direction < 0]
    note = f" († {', '.join(flipped)})" if flipped else " (none here)"
    ax.set_xlabel(
        f"benefit-oriented {MEASURE_LABELS.get(measure, measure)}\nlower-is-better outcomes sign-flipped{note}"
    )
    _benefit_annotation(ax, 1)
    _pooled_table(tax, results, y)
    _pooled_titles(fig, tax, results)
    _legend(ax, forest=False)
    return fig


# --- layout ---------------------------------------------------------------------------------


def _new_figure(n_rows: int, labels: Sequence[str], *, table_inch: float) -> tuple[Figure, Axes, Axes]:
    """Figure with the plot axes and a table axes (same rows) at the right; height scales with rows."""
    label_inch = 0.075 * max(len(s) for s in labels) + 0.3
    plot_inch = 5.0
    width = label_inch + plot_inch + table_inch + 0.4
    height = 3.1 + ROW_INCH * (n_rows + 1.5)
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.08, h_pad=0.08, wspace=0.0)
    grid = fig.add_gridspec(1, 2, width_ratios=[plot_inch, table_inch])
    ax = fig.add_subplot(grid[0, 0], gid="forest")
    tax = fig.add_subplot(grid[0, 1], sharey=ax, gid="table")
    tax.set_axis_off()
    return fig, ax, tax


def _format_axes(
    ax: Axes, tax: Axes, labels: Sequence[str], ticks: np.ndarray, xlim: tuple[float, float], *, separator: float | None
) -> None:
    """Row labels as y ticks (top to bottom), x limits, the zero line and a separator line."""
    ax.set_yticks(ticks, labels=list(labels), fontsize=9.5)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(ticks[-1] + 0.75, -1.3)  # inverted: first row at the top, a header row above it
    ax.set_xlim(*xlim)
    ax.axvline(0.0, color="#666666", lw=0.9, zorder=1)
    ax.grid(axis="x", color=COLORS["grid"], lw=0.4, alpha=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if separator is not None:
        for a in (ax, tax):
            a.axhline(separator, color="#888888", lw=0.6)


def _xlim(lows: Sequence, highs: Sequence) -> tuple[float, float]:
    lo = min(0.0, float(np.min(np.concatenate([np.ravel(v) for v in lows]))))
    hi = max(0.0, float(np.max(np.concatenate([np.ravel(v) for v in highs]))))
    pad = 0.06 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def _shorten(label: str) -> str:
    return display_label(label, MAX_LABEL_CHARS)


# --- marks ----------------------------------------------------------------------------------


def _draw_studies(ax: Axes, studies: pd.DataFrame, y: np.ndarray) -> None:
    """Observed g ± z·√vi (squares sized by 1/vi) and shrunken θ_i with 95% ETI (circles) below."""
    yi, vi = studies["yi"].to_numpy(float), studies["vi"].to_numpy(float)
    half = Z975 * np.sqrt(vi)
    weight = (1.0 / vi) / np.max(1.0 / vi)
    y_obs, y_shr = y - _OFFSET, y + _OFFSET
    ax.hlines(y_obs, yi - half, yi + half, color=COLORS["observed"], lw=1.1, zorder=3, gid="observed_ci")
    ax.scatter(
        yi, y_obs, s=14 + 70 * weight, marker="s", color=COLORS["observed"], zorder=4, linewidths=0, gid="observed"
    )
    ax.hlines(
        y_shr,
        studies["theta_q025"],
        studies["theta_q975"],
        color=COLORS["shrunken"],
        lw=1.1,
        zorder=3,
        gid="shrunken_eti",
    )
    ax.scatter(
        studies["theta_mean"], y_shr, s=22, marker="o", color=COLORS["shrunken"], zorder=4, linewidths=0, gid="shrunken"
    )


def _draw_diamond(ax: Axes, summary: dict[str, float], y: float, *, half_height: float = 0.3) -> Polygon:
    """Diamond from q025 to q975, centred at the posterior mean."""
    lo, mid, hi = summary["q025"], summary["mean"], summary["q975"]
    xy = [(lo, y), (mid, y - half_height), (hi, y), (mid, y + half_height)]
    diamond = Polygon(
        xy, closed=True, facecolor=COLORS["pooled"], edgecolor=COLORS["pooled"], zorder=4, gid="pooled_diamond"
    )
    ax.add_patch(diamond)
    return diamond


def _draw_prediction(ax: Axes, summary: dict[str, float], y: float) -> Line2D:
    """Prediction interval as a bar from q025 to q975 with end caps."""
    lo, hi = summary["q025"], summary["q975"]
    (line,) = ax.plot(
        [lo, hi], [y, y], color=COLORS["prediction"], lw=2.6, solid_capstyle="butt", zorder=3, gid="prediction_interval"
    )
    ax.vlines([lo, hi], y - 0.16, y + 0.16, color=COLORS["prediction"], lw=1.4, zorder=3)
    return line


def _below_xlabel(ax: Axes) -> float:
    """Distance in points from the bottom of the axes to below its x label (ticks + label lines)."""
    return 23.0 + 13.0 * (ax.get_xlabel().count("\n") + 1)


def _benefit_annotation(ax: Axes, direction: int) -> None:
    """'favours treatment' arrow under the x label on the side of benefit, 'favours control' opposite."""
    below_points = _below_xlabel(ax)
    right = direction > 0
    texts = {True: "favours treatment →", False: "← favours treatment"}
    others = {True: "← favours control", False: "favours control →"}
    style = {
        "xycoords": "axes fraction",
        "textcoords": "offset points",
        "va": "top",
        "fontsize": 9,
        "annotation_clip": False,
    }
    ax.annotate(
        texts[right],
        xy=(1.0 if right else 0.0, 0.0),
        xytext=(0, -below_points),
        ha="right" if right else "left",
        color="#006400",
        fontweight="bold",
        gid="benefit_annotation",
        **style,
    )
    ax.annotate(
        others[right],
        xy=(0.0 if right else 1.0, 0.0),
        xytext=(0, -below_points),
        ha="left" if right else "right",
        color="#555555",
        gid="control_annotation",
        **style,
    )


def _legend(ax: Axes, *, forest: bool) -> None:
    """Key of the marks, under the main axes (inside its layout box, so nothing overlaps it)."""
    handles = [
        Line2D([], [], color=COLORS["pooled"], marker="D", lw=0, markersize=7, label="pooled μ, mean [95% ETI]"),
        Line2D([], [], color=COLORS["prediction"], lw=2.6, label="95% prediction interval (θ_new)"),
    ]
    if forest:
        handles[:0] = [
            Line2D([], [], color=COLORS["observed"], marker="s", lw=1.1, markersize=6, label="observed g [95% CI]"),
            Line2D(
                [], [], color=COLORS["shrunken"], marker="o", lw=1.1, markersize=5, label="shrunken θ_i, mean [95% ETI]"
            ),
        ]
        handles = [handles[0], handles[2], handles[1], handles[3]]  # column-major: observed/shrunken, pooled/PI
    shift = ScaledTranslation(0.0, -(_below_xlabel(ax) + 17.0) / 72.0, ax.get_figure().dpi_scale_trans)
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        bbox_transform=ax.transAxes + shift,
        ncols=2,
        frameon=False,
        fontsize=8.5,
        handlelength=2.0,
        columnspacing=1.6,
        borderaxespad=0.0,
    )


# --- text -----------------------------------------------------------------------------------


def _num(x: float) -> str:
    """Two decimals with a typographic minus; values that round to zero print as 0.00 (not −0.00)."""
    return f"{0.0 if round(x, 2) == 0 else x:.2f}".replace("-", "\u2212")


def _interval(mid: float, lo: float, hi: float) -> str:
    return f"{_num(mid)} [{_num(lo)}, {_num(hi)}]"


def _prob(p: float, *, relation: bool = False) -> str:
    """Probability to 3 decimals; ``>0.999`` / ``<0.001`` at the extremes (``relation`` adds ``= ``)."""
    if p > 0.9995:
        return "> 0.999" if relation else ">0.999"
    if p < 0.0005:
        return "< 0.001" if relation else "<0.001"
    return f"= {p:.3f}" if relation else f"{p:.3f}"


def _forest_table(
    tax: Axes,
    studies: pd.DataFrame,
    y: np.ndarray,
    result: MetaAnalysisResult,
    y_pool: float,
    y_pred: float,
    *,
    symbol: str,
) -> None:
    """Right-hand columns 'g [95% CI]' and 'θ [95% ETI]' (pooled and prediction rows in the θ column)."""
    col_g, col_t = 0.02, 0.53
    kw = {"va": "center", "fontsize": 9, "family": "DejaVu Sans"}
    tax.text(col_g, -1.0, f"{symbol} [95% CI]", fontweight="bold", **kw)
    tax.text(col_t, -1.0, "θ [95% ETI]", fontweight="bold", color=COLORS["shrunken"], **kw)
    for yy, (_, row) in zip(y, studies.iterrows()):
        half = Z975 * np.sqrt(row["vi"])
        tax.text(col_g, yy, _interval(row["yi"], row["yi"] - half, row["yi"] + half), **kw)
        tax.text(
            col_t,
            yy,
            _interval(row["theta_mean"], row["theta_q025"], row["theta_q975"]),
            color=COLORS["shrunken"],
            **kw,
        )
    mu, new = result.summaries["mu"], result.summaries["theta_new"]
    tax.text(col_g, y_pool, "μ", fontweight="bold", **kw)
    tax.text(col_t, y_pool, _interval(mu["mean"], mu["q025"], mu["q975"]), fontweight="bold", **kw)
    tax.text(col_g, y_pred, "θ_new", color=COLORS["prediction"], **kw)
    tax.text(col_t, y_pred, _interval(new["mean"], new["q025"], new["q975"]), color=COLORS["prediction"], **kw)


def _pooled_table(tax: Axes, results: Sequence[MetaAnalysisResult], y: np.ndarray) -> None:
    """Right-hand columns: benefit-oriented μ [95% ETI], k and P(benefit)."""
    cols = (0.02, 0.60, 0.76)
    kw = {"va": "center", "fontsize": 9}
    for x, head in zip(cols, ("μ [95% ETI]", "k", "P(benefit)")):
        tax.text(x, -1.0, head, fontweight="bold", **kw)
    for yy, r in zip(y, results):
        mu = _oriented(r.summaries["mu"], r.outcome.direction)
        tax.text(cols[0], yy, _interval(mu["mean"], mu["q025"], mu["q975"]), **kw)
        tax.text(cols[1], yy, str(r.k), **kw)
        tax.text(cols[2], yy, _prob(r.prob_benefit), **kw)


def _oriented(summary: dict[str, float], direction: int) -> dict[str, float]:
    """Summary on the benefit-oriented scale (times ``direction``; the interval ends swap if flipped)."""
    if direction > 0:
        return dict(summary)
    return {"mean": -summary["mean"], "median": -summary["median"], "q025": -summary["q975"], "q975": -summary["q025"]}


def _priors_text(priors: dict[str, str]) -> str:
    symbols = {"mu": "μ", "tau": "τ", "omega": "ω"}
    return ", ".join(f"{symbols.get(p, p)} ~ {s}" for p, s in priors.items())


def _engine_text(result: MetaAnalysisResult, *, seed: bool = True) -> str:
    if result.engine == "exact":
        return "exact (quadrature over τ)"
    s = result.settings
    return f"NUTS ({s.get('chains')}×{s.get('draws')} draws" + (f", seed {s.get('seed')})" if seed else ")")


def _simulated_marker(fig: Figure, tax: Axes, ax: Axes) -> None:
    """Red 'SIMULATED DATA' label above the table and a faint watermark across the plot."""
    tax.set_title(
        "SIMULATED DATA", loc="right", color=COLORS["simulated"], fontweight="bold", fontsize=11, gid="simulated_marker"
    )
    ax.text(
        0.5,
        0.5,
        "SIMULATED",
        transform=ax.transAxes,
        ha="center",
        va="center",
        rotation=25,
        fontsize=44,
        color=COLORS["simulated"],
        alpha=0.07,
        fontweight="bold",
        zorder=0,
        in_layout=False,
        gid="simulated_watermark",
    )


def _forest_titles(fig: Figure, tax: Axes, result: MetaAnalysisResult) -> None:
    o = result.outcome
    better = "higher" if o.direction > 0 else "lower"
    fig.suptitle(
        f"{display_label(o.label)}: Bayesian random-effects meta-analysis (k = {result.k})",
        fontsize=12,
        fontweight="bold",
    )
    fig.axes[0].set_title(
        f"{result.dataset} · outcome {o.id} ({better} is better) · engine {_engine_text(result)}\n"
        f"{result.likelihood_label} · priors: {_priors_text(result.priors)} · "
        f"P(benefit) {_prob(result.prob_benefit, relation=True)}",
        loc="left",
        fontsize=9,
        color="#333333",
    )
    fig.supxlabel(
        f"All intervals 95% equal-tailed ({INTERVAL_KIND}); observed g: 95% CI yi ± 1.96·√vi, square area ∝ 1/vi; "
        "θ: posterior of the study effect (shrunken).",
        fontsize=8,
        color="#444444",
    )
    if result.provenance == "simulated":
        _simulated_marker(fig, tax, fig.axes[0])


def _pooled_titles(fig: Figure, tax: Axes, results: Sequence[MetaAnalysisResult]) -> None:
    datasets = ", ".join(dict.fromkeys(r.dataset for r in results))
    engines = ", ".join(dict.fromkeys(_engine_text(r, seed=False) for r in results))
    engines += " · " + ", ".join(dict.fromkeys(r.likelihood_label for r in results))
    priors = "; ".join(dict.fromkeys(_priors_text(r.priors) for r in results))
    fig.suptitle(
        f"Pooled effects by outcome ({len(results)} outcome{'s' if len(results) > 1 else ''})",
        fontsize=12,
        fontweight="bold",
    )
    fig.axes[0].set_title(f"{datasets} · engine {engines}\npriors: {priors}", loc="left", fontsize=9, color="#333333")
    fig.supxlabel(
        f"All intervals 95% equal-tailed ({INTERVAL_KIND}); diamond: pooled μ (posterior mean, 95% ETI); "
        "bar: 95% prediction interval for a new study (θ_new). Right = benefit on every row.",
        fontsize=8,
        color="#444444",
    )
    if any(r.provenance == "simulated" for r in results):
        _simulated_marker(fig, tax, fig.axes[0])
