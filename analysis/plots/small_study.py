r"""Funnel plots with the Bayesian posterior predictive region and the PET/PEESE fits.

:func:`funnel_plot` draws metafor's ``funnel()`` layout (effect on the x axis, imprecision on
an inverted y axis, the most precise studies at the top) in up to two panels:

* **SE panel**: observed :math:`(y_i, s_i)`; the 95% posterior predictive region of the
  effect :math:`y` observed by a study of standard error :math:`s` under the random-effects
  posterior, i.e. the 2.5% and 97.5% quantiles of the normal mixture
  :math:`\int \mathcal N(y;\ \mu,\ s^2 + \tau^2)\,p(\mu, \tau \mid \text{data})`, computed
  exactly over the stored posterior draws; the posterior mean of :math:`\mu`; the posterior
  mean PET line :math:`\beta_0 + \beta_1 s` and PEESE curve :math:`\beta_0 + \beta_1 s^2`.
* **sqrt(1/n~) panel** (arm-level SMD data): the same on :math:`x = \sqrt{1/\tilde n}`. The
  sampling variance of an SMD at :math:`x` is :math:`x^2 (1 + \mu^2 / 8)` for balanced groups
  (:math:`v = 1/\tilde n + g^2 / (2N)`, :math:`N = 4\tilde n`, with :math:`g` replaced by the
  draw's :math:`\mu`), so the region is the mixture of
  :math:`\mathcal N(\mu,\ x^2(1 + \mu^2/8) + \tau^2)`.

The figure is a :class:`matplotlib.figure.Figure` built without pyplot; it is neither saved nor
shown. Artists carry a ``gid``: axes ``"funnel_se"`` / ``"funnel_n"``, ``"studies"``,
``"predictive_region"``, ``"pooled_mu"``, ``"pet_line"``, ``"peese_line"``, ``"null_line"``,
``"simulated_marker"``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.plots.forest import COLORS, MEASURE_LABELS
from analysis.results.small_study import RegressionFit, SmallStudyResult
from models.exact.mixture import mixture_quantile

#: Number of imprecision values at which the predictive region and the fitted lines are evaluated.
N_GRID: int = 60
REGION_P = np.array([0.025, 0.975])
LINE_STYLE: dict[str, dict] = {
    "PET": {"color": "#0072B2", "ls": "-", "gid": "pet_line"},
    "PEESE": {"color": "#009E73", "ls": "--", "gid": "peese_line"},
}


def predictive_region(
    mu: np.ndarray, tau: np.ndarray, x: np.ndarray, *, smd_n_scale: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """95% posterior predictive bounds of an observed effect at each imprecision ``x``.

    Parameters
    ----------
    mu, tau : numpy.ndarray
        Posterior draws of the pooled effect and the between-study SD.
    x : numpy.ndarray
        Standard errors (or ``sqrt(1/n~)`` values when ``smd_n_scale``).
    smd_n_scale : bool
        Sampling variance ``x^2 (1 + mu^2 / 8)`` (SMD, balanced groups) instead of ``x^2``.

    Returns
    -------
    lower, upper : numpy.ndarray
        2.5% and 97.5% quantiles of the predictive normal mixture, one per ``x``.
    """
    mu, tau, x = (np.asarray(a, dtype=float) for a in (mu, tau, x))
    inflate = 1.0 + mu**2 / 8.0 if smd_n_scale else np.ones_like(mu)
    sds = np.sqrt(tau[None, :] ** 2 + x[:, None] ** 2 * inflate[None, :])
    means = np.broadcast_to(mu[None, :], sds.shape)
    q = mixture_quantile(REGION_P, means, sds, np.full(mu.size, 1.0 / mu.size))
    return q[:, 0], q[:, 1]


def _panel(ax: Axes, result: SmallStudyResult, x_obs: np.ndarray, *, scale: str) -> None:
    """One funnel panel: region, pooled and model-averaged mu, studies, fitted lines."""
    grid = np.linspace(0.0, 1.08 * float(np.max(x_obs)), N_GRID)
    mu, tau = result.re_draws["mu"], result.re_draws["tau"]
    lo, hi = predictive_region(mu, tau, grid, smd_n_scale=scale == "n")
    ax.fill_betweenx(
        grid, lo, hi, color="#DDDDDD", alpha=0.8, lw=0, gid="predictive_region", label="95% posterior predictive region"
    )
    ax.axvline(
        float(np.mean(mu)), color=COLORS["pooled"], lw=1.2, gid="pooled_mu", label="posterior mean μ (unadjusted)"
    )
    avg = result.averaged
    mu_avg = avg.outcome.direction * avg.mu["mean"]
    ax.axvline(
        mu_avg,
        color=COLORS["pooled"],
        lw=1.2,
        ls="--",
        gid="averaged_mu",
        label=f"model-averaged μ over effect, heterogeneity and bias (BF_bias {avg.inclusion_bf['bias']:.2f})",
    )
    ax.axvline(0.0, color=COLORS["grid"], lw=0.8, ls=":", gid="null_line")
    for fit in result.regressions.values():
        if (fit.predictor in ("sei", "vi")) == (scale == "se"):
            _fit_line(ax, fit, grid)
    ax.scatter(result.studies["yi"], x_obs, s=22, color=COLORS["observed"], zorder=4, gid="studies", label="studies")
    ax.set_ylim(grid[-1], 0.0)  # inverted: precise studies at the top, as metafor's funnel
    ax.set_xlabel(MEASURE_LABELS.get(result.measure, result.measure))
    ax.set_ylabel("standard error" if scale == "se" else "sqrt(1/ñ),  ñ = n_t n_c / (n_t + n_c)")
    ax.grid(True, color=COLORS["grid"], lw=0.4, alpha=0.5)


def _fit_line(ax: Axes, fit: RegressionFit, grid: np.ndarray) -> None:
    b0, b1 = float(np.mean(fit.draws["intercept"])), float(np.mean(fit.draws["slope"]))
    power = 1.0 if fit.kind == "PET" else 2.0
    style = LINE_STYLE[fit.kind]
    label = f"{fit.name}: β0 = {fit.intercept['mean']:.2f} [{fit.intercept['q025']:.2f}, {fit.intercept['q975']:.2f}]"
    ax.plot(b0 + b1 * grid**power, grid, color=style["color"], ls=style["ls"], lw=1.4, gid=style["gid"], label=label)


def funnel_plot(result: SmallStudyResult) -> Figure:
    """Funnel plot(s) of a small-study-effect analysis.

    Parameters
    ----------
    result : SmallStudyResult
        Output of :func:`analysis.fitting.small_study.fit_small_study` (its exact random-effects draws
        and PET/PEESE fits are drawn; nothing is refitted).

    Returns
    -------
    matplotlib.figure.Figure
        One panel on the SE axis and, when group sizes are known, a second on ``sqrt(1/n~)``.
    """
    has_n = bool(result.studies["n_tilde"].notna().all())
    fig = Figure(figsize=(11.0 if has_n else 6.5, 6.2), layout="constrained")
    axes = fig.subplots(1, 2 if has_n else 1, squeeze=False)[0]
    axes[0].set_gid("funnel_se")
    _panel(axes[0], result, result.studies["sei"].to_numpy(dtype=float), scale="se")
    if has_n:
        axes[1].set_gid("funnel_n")
        _panel(axes[1], result, np.sqrt(1.0 / result.studies["n_tilde"].to_numpy(dtype=float)), scale="n")
    for ax in axes:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7, frameon=False)
    title = (
        f"Funnel plot: {result.dataset}\n{result.outcome.label} (k = {result.k}; regions and intervals 95%; "
        "normal likelihood)"
    )
    fig.suptitle(title if has_n else title + "\nsqrt(1/ñ) panel omitted: group sizes not available", fontsize=10)
    if result.provenance == "simulated":
        axes[-1].set_title(
            "SIMULATED DATA",
            loc="right",
            color=COLORS["simulated"],
            fontweight="bold",
            fontsize=11,
            gid="simulated_marker",
        )
    return fig
