"""Subgroup plot of Bayesian meta-regressions: subgroup means per level and numeric slopes.

:func:`subgroup_plot` draws, for one meta-regression or for the one-moderator-at-a-time fits of
:func:`analysis.fitting.meta_regression.fit_subgroups_one_at_a_time`, a top panel with the expected
effect of every level of each categorical moderator (posterior mean and 95% ETI; reference level
as an open marker) and, below it, a panel with the slope per unit of each numeric moderator
(its own axis: per-unit slopes are on a different scale from effects). Effects are on the
natural scale of the outcome; the side of benefit is marked with an arrow on each panel. The
figure is a :class:`matplotlib.figure.Figure` built without pyplot and is neither saved nor shown.

Artists that tests and the report look up carry a ``gid``: ``"subgroups"`` / ``"slopes"`` (axes),
``"subgroup_mean"``, ``"subgroup_eti"``, ``"slope"``, ``"slope_eti"``, ``"benefit_annotation"``,
``"simulated_marker"``, ``"few_studies_warning"`` (fewer than
:data:`analysis.results.meta_regression.MIN_K_SUBGROUPS` studies). One-at-a-time fits are titled
exploratory.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.config import INTERVAL_KIND
from analysis.plots.labels import display_label
from analysis.results.meta_regression import MIN_K_SUBGROUPS, MetaRegressionResult

__all__ = ["subgroup_plot"]

COLORS: dict[str, str] = {"mean": "#0072B2", "slope": "#009E73", "simulated": "#C00000", "grid": "#BBBBBB"}
ROW_INCH: float = 0.32


def subgroup_plot(result: MetaRegressionResult | Mapping[str, MetaRegressionResult]) -> Figure:
    """Subgroup means (95% ETI) per level of categorical moderators and slopes of numeric ones.

    Parameters
    ----------
    result : MetaRegressionResult or mapping of str to MetaRegressionResult
        One fit (e.g. several moderators jointly) or one fit per moderator (one at a time), all
        of the same outcome.

    Returns
    -------
    matplotlib.figure.Figure
        Top panel: one row per level (posterior mean and 95% ETI of the expected effect, other
        moderators at the baseline stated in the caption); the table gives the mean [95% ETI],
        the number of studies, and for non-reference levels the contrast with the reference and
        P(level more beneficial). Bottom panel (if any numeric moderator): slope per unit with
        95% ETI and P(more benefit at higher values). A red SIMULATED label marks simulated data;
        one-at-a-time fits are titled exploratory, and below ``MIN_K_SUBGROUPS`` studies a red
        line warns that k is too small for subgroup analyses.

    Raises
    ------
    ValueError
        If no result is given or the results are of different outcomes.
    """
    fits = list(result.values()) if isinstance(result, Mapping) else [result]
    if not fits or len({f.outcome.id for f in fits}) != 1:
        raise ValueError("subgroup_plot needs one or more results of the same outcome")
    level_rows = [(f, s) for f in fits for s in f.subgroups]
    slope_rows = [(f, s) for f in fits for s in f.slopes]
    panels = [(name, rows) for name, rows in (("subgroups", level_rows), ("slopes", slope_rows)) if rows]
    heights = [len(_row_labels(rows)) + 1.5 for _, rows in panels]
    fig = Figure(figsize=(12.5, 3.0 + ROW_INCH * sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(panels), 2, width_ratios=[5.0, 4.6], height_ratios=heights)
    direction = fits[0].outcome.direction
    for i, (name, rows) in enumerate(panels):
        ax, tax = fig.add_subplot(grid[i, 0], gid=name), fig.add_subplot(grid[i, 1])
        tax.set_axis_off()
        _draw_panel(ax, tax, rows, slopes=name == "slopes")
        tax.set_ylim(ax.get_ylim())
        _benefit_annotation(ax, direction, slopes=name == "slopes")
    _titles(fig, fits, separate=isinstance(result, Mapping))
    return fig


def _row_labels(rows: list[tuple[MetaRegressionResult, dict]]) -> list[str]:
    """Row labels: a header per moderator, then one row per level (or one row per slope)."""
    labels, seen = [], set()
    for _, s in rows:
        if "level" not in s:
            labels.append(f"{display_label(s['moderator'])} (per unit)")
            continue
        if s["moderator"] not in seen:
            seen.add(s["moderator"])
            labels.append(display_label(s["moderator"]))
        labels.append(f"   {display_label(s['level'], 40)}" + (" (ref)" if s["is_reference"] else ""))
    return labels


def _draw_panel(ax: Axes, tax: Axes, rows: list[tuple[MetaRegressionResult, dict]], *, slopes: bool) -> None:
    """Marks, labels and table of one panel."""
    labels = _row_labels(rows)
    data_y = np.array([i for i, lab in enumerate(labels) if lab.startswith("   ") or slopes], dtype=float)
    color = COLORS["slope" if slopes else "mean"]
    lo = np.array([s["q025"] for _, s in rows])
    hi = np.array([s["q975"] for _, s in rows])
    mean = np.array([s["mean"] for _, s in rows])
    ref = np.array([bool(s.get("is_reference")) for _, s in rows])
    ax.hlines(data_y, lo, hi, color=color, lw=1.6, zorder=3, gid="slope_eti" if slopes else "subgroup_eti")
    ax.scatter(
        mean,
        data_y,
        s=36,
        marker="D" if slopes else "o",
        facecolors=np.where(ref, "white", color),
        edgecolors=color,
        linewidths=1.4,
        zorder=4,
        gid="slope" if slopes else "subgroup_mean",
    )
    ax.set_yticks(np.arange(len(labels)), labels=labels, fontsize=9.5)
    for tick, lab in zip(ax.get_yticklabels(), labels):
        tick.set_fontweight("normal" if lab.startswith("   ") or slopes else "bold")
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(len(labels) - 0.4, -1.4)
    span = float(max(hi.max(), 0.0) - min(lo.min(), 0.0)) or 1.0
    ax.set_xlim(min(lo.min(), 0.0) - 0.06 * span, max(hi.max(), 0.0) + 0.06 * span)
    ax.axvline(0.0, color="#666666", lw=0.9, zorder=1)
    ax.grid(axis="x", color=COLORS["grid"], lw=0.4, alpha=0.6)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    measure = rows[0][0].measure
    ax.set_xlabel(
        f"slope per unit of the moderator ({measure} per unit)"
        if slopes
        else f"expected effect in the subgroup ({measure})"
    )
    _table(tax, rows, data_y, slopes=slopes)


def _num(x: float) -> str:
    """Two decimals (three below 0.1, for per-unit slopes) with a typographic minus; no −0.00."""
    digits = 2 if abs(x) >= 0.1 else 3
    return f"{0.0 if round(x, digits) == 0 else x:.{digits}f}".replace("-", "\u2212")


def _prob(p: float) -> str:
    return ">0.999" if p > 0.9995 else "<0.001" if p < 0.0005 else f"{p:.3f}"


def _table(tax: Axes, rows: list[tuple[MetaRegressionResult, dict]], y: np.ndarray, *, slopes: bool) -> None:
    """Right-hand columns: estimate [95% ETI], k, and the contrast (or slope) P(benefit)."""
    kw = {"va": "center", "fontsize": 8.8}
    heads = ("slope [95% ETI]", "P(benefit)") if slopes else ("mean [95% ETI]", "k", "Δ vs ref [95% ETI]", "P(benefit)")
    cols = (0.0, 0.36) if slopes else (0.0, 0.33, 0.42, 0.80)
    for x, head in zip(cols, heads):
        tax.text(x, -1.0, head, fontweight="bold", **kw)
    for yy, (fit, s) in zip(y, rows):
        tax.text(cols[0], yy, f"{_num(s['mean'])} [{_num(s['q025'])}, {_num(s['q975'])}]", **kw)
        if slopes:
            tax.text(cols[1], yy, _prob(s["prob_benefit"]), **kw)
            continue
        tax.text(cols[1], yy, str(s["n_studies"]), **kw)
        contrast = next(
            (c for c in fit.contrasts if c["moderator"] == s["moderator"] and c["level"] == s["level"]), None
        )
        if contrast is not None:
            tax.text(
                cols[2], yy, f"{_num(contrast['mean'])} [{_num(contrast['q025'])}, {_num(contrast['q975'])}]", **kw
            )
            tax.text(cols[3], yy, _prob(contrast["prob_benefit"]), **kw)


def _benefit_annotation(ax: Axes, direction: int, *, slopes: bool) -> None:
    """Arrow text under the axis on the side of benefit (for slopes: more benefit at higher values)."""
    right = direction > 0
    text = "more benefit at higher values" if slopes else "favours treatment"
    label = f"{text} →" if right else f"← {text}"
    ax.annotate(
        label,
        xy=(1.0 if right else 0.0, 0.0),
        xycoords="axes fraction",
        xytext=(0, -36),
        textcoords="offset points",
        ha="right" if right else "left",
        va="top",
        fontsize=9,
        color="#006400",
        fontweight="bold",
        annotation_clip=False,
        gid="benefit_annotation",
    )


def _titles(fig: Figure, fits: list[MetaRegressionResult], *, separate: bool) -> None:
    o, first = fits[0].outcome, fits[0]
    better = "higher" if o.direction > 0 else "lower"
    kind = "one moderator at a time, exploratory" if separate else "moderators jointly"
    engine = "exact (quadrature over τ)" if first.engine == "exact" else "NUTS"
    fig.suptitle(
        f"{display_label(o.label)}: Bayesian meta-regression, {kind} (normal likelihood)",
        fontsize=12,
        fontweight="bold",
    )
    priors = "; ".join(dict.fromkeys(f.slope_prior_text() for f in fits))
    fig.axes[0].set_title(
        f"{first.dataset} · outcome {o.id} ({better} is better) · k = {first.k}\nengine {engine}",
        loc="left",
        fontsize=9,
        color="#333333",
    )
    fig.supxlabel(
        f"Priors: intercept ~ {first.priors['intercept']}, τ ~ {first.priors['tau']}; {priors}.\n"
        f"All intervals 95% equal-tailed ({INTERVAL_KIND}). Subgroup mean = expected effect at that level, "
        f"{first.subgroup_text};\nopen marker = reference level. Δ vs ref = contrast level − reference; "
        "P(benefit) = P(level more beneficial than reference) or P(more benefit at higher values).",
        fontsize=8,
        color="#444444",
    )
    if first.k < MIN_K_SUBGROUPS:
        warning = fig.axes[1].set_title(
            f"k = {first.k} < {MIN_K_SUBGROUPS} studies: too few for subgroup\nanalyses (Cochrane Handbook §10.11.5.1)",
            loc="left",
            color=COLORS["simulated"],
            fontsize=9,
        )
        warning.set_gid("few_studies_warning")
    if any(f.provenance == "simulated" for f in fits):
        fig.axes[1].set_title(
            "SIMULATED DATA",
            loc="right",
            color=COLORS["simulated"],
            fontweight="bold",
            fontsize=11,
            gid="simulated_marker",
        )
