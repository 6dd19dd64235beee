r"""Exact small-sample multilevel random-effects model on arm-level summaries (means and SDs), for NUTS.

The normal model of :mod:`models.random_effects` treats Hedges' g as normal with a variance
that depends on g itself. With 5–10 animals per arm this is a poor approximation: g and its
standard error are correlated, which biases the pooled effect and fakes funnel asymmetry.
Here the likelihood is written on the *sufficient statistics* of normally distributed animal
data instead (arm means and sample variances), so it is exact for any arm size.

**Sampling model.** Study :math:`i = 1..k` (one outcome) has one or more *baseline groups*
:math:`g`: a control arm and the treatment arms compared with it. Arm :math:`a` has sample
mean :math:`m_a`, sample SD :math:`s_a` and :math:`n_a` animals, and

.. math::

    m_a \mid \alpha, \theta, \sigma &\sim \mathcal N\!\left(\alpha_{g(a)} + t_a\,\theta_{a}\,\sigma_{i(a)},\;
        \sigma_{i(a)}^2 / n_a\right), \\
    \frac{(n_a - 1)\, s_a^2}{\sigma_{i(a)}^2} \sim \chi^2_{n_a - 1}
        \quad&\Longleftrightarrow\quad
        s_a^2 \sim \operatorname{Gamma}\!\left(\text{shape} = \tfrac{n_a - 1}{2},\;
        \text{rate} = \tfrac{n_a - 1}{2\sigma_{i(a)}^2}\right),

with :math:`t_a = 1` for treatment and 0 for control arms, :math:`\alpha_g` the true control
mean, :math:`\sigma_i` the common within-group SD of study :math:`i` (the population value
of the pooled SD that Hedges' g divides by) and :math:`\theta_a` the true standardised mean
difference of treatment arm :math:`a` against its control (the :math:`\delta` of Hedges 1981,
the estimand of g): one *comparison*. A control arm enters once however many arms are compared
with it, so shared controls need no Gleser–Olkin covariance.

**The baseline is integrated out.** With a flat prior on each :math:`\alpha_g`, integrating it
out leaves the exact likelihood of the within-group contrasts. Ordering a group's arms control
first, then the treatments :math:`j = 1..J`, the weighted Helmert contrasts

.. math::

    u_j = m_j - \frac{\sum_{a<j} n_a m_a}{N_{<j}}, \qquad N_{<j} = \sum_{a<j} n_a,

are independent given :math:`(\theta, \sigma)`, with

.. math::

    u_j \mid \theta, \sigma \sim \mathcal N\!\left(\sigma_i\,(H\theta)_j,\;
        \sigma_i^2 r_j^2\right), \qquad (H\theta)_j = \theta_j - \sum_{0 < a < j} \frac{n_a}{N_{<j}}\,\theta_a,
        \qquad r_j^2 = \frac{1}{n_j} + \frac{1}{N_{<j}}

(:math:`n_0` the control arm; :math:`H` is the unit lower-triangular *Helmert matrix* of the
group, block-diagonal over groups, computed in the graph by a cumulative sum in
:math:`O(\text{comparisons})`; when all arms of a group share one :math:`\theta`,
:math:`(H\theta)_j = (n_0/N_{<j})\,\theta`). The map from the simple contrasts
:math:`D_j = m_j - m_0` to :math:`u` is unit-triangular, so :math:`\sum_j \log p(u_j)` *equals*
the log-density of :math:`D \sim \mathcal N(\sigma_i\theta,
\sigma_i^2(\operatorname{diag}(1/n_j) + 11^\top/n_0))`.
For a two-arm study this is :math:`D_i = m_t - m_c \sim \mathcal N(\theta_i\sigma_i,
\sigma_i^2(1/n_t + 1/n_c))`, and with the χ² terms of both arms it is the likelihood of
:math:`(D_i, s_{p,i}^2)` up to a constant. Integrating :math:`\alpha` removes one nuisance
parameter per group and the :math:`\alpha`–:math:`\theta\sigma` correlation, which halves the
NUTS tree size compared with sampling :math:`\alpha`.

**Random effects: comparisons nested in studies**, non-centred. For comparison :math:`j` of
study :math:`i`,

.. math::

    \theta_{ij} = x_{ij}^\top\beta + \tau z_i + \omega v_{ij}, \quad z_i, v_{ij} \sim \mathcal N(0, 1),
    \quad \beta_l \sim p(\beta_l) \text{ (normal)}, \quad \tau \sim p(\tau), \quad \omega \sim p(\omega):

:math:`\tau` is the between-study SD and :math:`\omega` the SD between comparisons of one study
(:math:`u_i = \tau z_i`, :math:`w_{ij} = \omega v_{ij}` in the usual three-level notation).
Moderators :math:`x_{ij}` may be study-level (constant within a study) or comparison-level
(dose, formulation), so a within-study contrast informs :math:`\beta` directly. The study's
own effect reported for forest plots is :math:`\theta_i = \bar x_i^\top\beta + \tau z_i`
(:math:`\bar x_i` the mean of its comparisons' rows). When no study has two comparisons,
:math:`\tau` and :math:`\omega` are not separately identified and the model is built without
:math:`\omega` (``omega_prior=None``): then :math:`\theta_{ij} = \theta_i`, the single-level model.
With 5–10 animals per arm each study says little about its :math:`\theta`, so the centred form
has the usual funnel, and :math:`\theta` cannot be integrated out analytically here (the
likelihood depends on :math:`\theta\sigma_i`).

**Units and the prior of** :math:`\sigma_i`. Every study reports in its own units, so the data
are divided by the study's pooled SD :math:`S_i` before they reach the graph (contrasts
:math:`u_j/S_i`, variances :math:`s_a^2/S_i^2`). That is a change of the data by constants: it
changes the likelihood by a constant factor only, the graph's :math:`\tilde\sigma_i = \sigma_i/S_i`
is unit-free and :math:`\theta_i` is unchanged. No fixed prior on :math:`\sigma_i` could be
unit-free, so its prior is scaled from the data: :math:`\log\sigma_i \sim \mathcal N(\log S_i, 1)`
(``log_sigma`` below is :math:`\log\tilde\sigma_i \sim \mathcal N(0, 1)`). The χ² likelihood of
:math:`\log\sigma_i` peaks at :math:`\log S_i` with precision :math:`2\nu_i`,
:math:`\nu_i = \sum_a (n_a - 1) \ge 8` for two arms of 5 animals, so the prior moves no mode and
adds at most 1/16 of the data's precision (posterior SD of :math:`\log\sigma_i` about 3% smaller
than under the Jeffreys prior :math:`1/\sigma`); it is proper and keeps warm-up away from
:math:`\sigma \to 0, \infty`.

**Padding to a common layout.** A compiled model can only be reused for data of the same
shape (:mod:`analysis.fitting.nuts`), and the outcomes of a dataset differ in their numbers of studies,
arms and comparisons. The graph can therefore be built for a larger :class:`Layout`: padded
studies come last and have no data, so their ``z`` and ``log_sigma`` are independent
:math:`\mathcal N(0, 1)` a posteriori, independent of every real parameter; a padded comparison
has :math:`u = 0`, a zero row of :math:`H` and standard deviation 1, a padded arm has :math:`s^2 = 1`, 3
animals and :math:`\sigma = 1`, so each adds a constant to the log density. The posterior of
the real parameters is exactly that of the unpadded model; :func:`trim_padding` removes the
padded entries from the draws.

Free variables: ``mu`` (or ``beta_<name>``, with deterministic ``beta``, dim ``coef``),
``tau``, ``z`` and ``log_sigma`` (dim ``study``), with :math:`\omega`: ``omega`` and ``v`` (dim
``comparison``); deterministics ``theta`` (dim ``study``), ``theta_comparison`` (dim
``comparison``) and ``sigma`` (natural units). Observed: ``contrast`` (dim ``comparison``, one per treatment arm)
and ``s2`` (dim ``arm``). Every data array is a ``pm.Data``, so a compiled model can be reused
for new data of the same layout (``pm.set_data``), e.g. in simulation studies.

This module only builds graphs; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from models.priors import PriorSpec

__all__ = ["LOG_SIGMA_PRIOR_SD", "ArmSummaries", "Layout", "arm_summaries", "build_arm_level_model", "trim_padding"]

#: Prior SD of log sigma_i around log S_i (see the module docstring).
LOG_SIGMA_PRIOR_SD: float = 1.0


@dataclass(frozen=True)
class ArmSummaries:
    """Arm-level summaries of one outcome, standardised per study (the data of the graph).

    Attributes
    ----------
    study : tuple of str
        Study labels, ``k``.
    scale : numpy.ndarray
        Per study: pooled SD ``S_i`` of its arms (natural units).
    arm : tuple of str
        Arm labels (the ``arm`` dimension).
    arm_study, arm_n, arm_var : numpy.ndarray
        Per arm: study index ``0..k-1``, number of animals (>= 2), variance ``s^2 / S_i^2``.
    comparison : tuple of str
        Treatment-arm labels (the ``comparison`` dimension).
    comparison_study, contrast, se_factor : numpy.ndarray
        Per treatment arm: study index, Helmert contrast ``u_j / S_i`` and ``r_j``.
    comparison_n, n_before, group_start : numpy.ndarray
        Per treatment arm: its animals ``n_j``, the animals ``N_<j`` of the arms before it in its
        baseline group (control first), and the index of its group's first treatment arm (the
        arms of a group are contiguous); they define the Helmert matrix :attr:`helmert`.
    """

    study: tuple[str, ...]
    scale: np.ndarray
    arm: tuple[str, ...]
    arm_study: np.ndarray
    arm_n: np.ndarray
    arm_var: np.ndarray
    comparison: tuple[str, ...]
    comparison_study: np.ndarray
    contrast: np.ndarray
    se_factor: np.ndarray
    comparison_n: np.ndarray
    n_before: np.ndarray
    group_start: np.ndarray

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.study)

    @property
    def helmert(self) -> np.ndarray:
        """Dense Helmert matrix ``H``: the mean of contrast ``j`` is ``sigma_i (H theta)_j``.

        ``H[j, j] = 1`` and ``H[j, a] = -n_a / N_<j`` for the treatment arms ``a`` before ``j`` in
        its group. The graph never builds it: it computes ``H theta`` with a cumulative sum.
        """
        c = len(self.comparison)
        out = np.eye(c)
        for j in range(c):
            before = np.arange(self.group_start[j], j)
            out[j, before] = -self.comparison_n[before] / self.n_before[j]
        return out

    @property
    def multilevel(self) -> bool:
        """True if some study has two or more comparisons (so that omega is identified)."""
        return bool(np.bincount(self.comparison_study, minlength=self.k).max(initial=0) >= 2)

    def study_rows(self, X: np.ndarray) -> np.ndarray:
        """Per study, the mean of its comparisons' rows of a comparison-level design ``X``."""
        X = np.asarray(X, dtype=float)
        counts = np.bincount(self.comparison_study, minlength=self.k)
        sums = np.vstack(
            [np.bincount(self.comparison_study, weights=X[:, j], minlength=self.k) for j in range(X.shape[1])]
        )
        return (sums / counts).T


@dataclass(frozen=True)
class Layout:
    """Sizes of the ``study``, ``arm`` and ``comparison`` dimensions of an arm-level graph."""

    studies: int
    arms: int
    comparisons: int

    @classmethod
    def of(cls, data: ArmSummaries) -> Layout:
        """The layout of ``data`` itself (no padding)."""
        return cls(data.k, len(data.arm), len(data.comparison))

    @classmethod
    def covering(cls, datas: Sequence[ArmSummaries]) -> Layout:
        """The smallest layout that holds every one of ``datas``."""
        sizes = [cls.of(d) for d in datas]
        return cls(max(s.studies for s in sizes), max(s.arms for s in sizes), max(s.comparisons for s in sizes))

    def holds(self, data: ArmSummaries) -> bool:
        """True if ``data`` fits into this layout."""
        own = Layout.of(data)
        return own.studies <= self.studies and own.arms <= self.arms and own.comparisons <= self.comparisons


def arm_summaries(
    mean: np.ndarray,
    sd: np.ndarray,
    n: np.ndarray,
    treated: np.ndarray,
    arm_study: np.ndarray,
    arm_group: np.ndarray,
    *,
    study: Sequence[str],
    arm: Sequence[str] | None = None,
) -> ArmSummaries:
    """Helmert contrasts and variances of raw arm summaries, standardised by each study's pooled SD.

    Parameters
    ----------
    mean, sd, n : array_like
        Per arm: sample mean, sample SD (not SEM) and size, natural units.
    treated : array_like
        Per arm: 1 for treatment, 0 for control; every group has exactly one control arm.
    arm_study, arm_group : array_like of int
        Per arm: study index ``0..k-1`` and baseline-group index (groups nested in studies).
    study : sequence of str
        Study labels.
    arm : sequence of str, optional
        Arm labels (default ``arm0, arm1, ...``).

    Returns
    -------
    ArmSummaries
        Treatment arms of a group in the given order, after its control arm.

    Raises
    ------
    ValueError
        On an arm with fewer than 2 animals or a non-positive SD, a group without exactly one
        control arm or with arms from several studies, or a study without a treatment arm.
    """
    mean, sd, n, treated = (np.asarray(a, dtype=float) for a in (mean, sd, n, treated))
    arm_study, arm_group = np.asarray(arm_study, dtype=int), np.asarray(arm_group, dtype=int)
    labels = tuple(arm) if arm is not None else tuple(f"arm{j}" for j in range(mean.size))
    if np.any(n < 2) or np.any(~(sd > 0)):
        raise ValueError("the arm-level likelihood needs n >= 2 and SD > 0 in every arm")
    k, df = len(study), n - 1.0
    if set(arm_study[treated == 1]) != set(range(k)):
        raise ValueError("every study needs at least one treatment arm")
    scale = np.sqrt(
        np.bincount(arm_study, weights=df * sd**2, minlength=k) / np.bincount(arm_study, weights=df, minlength=k)
    )
    groups = dict.fromkeys(arm_group.tolist())  # in order of first appearance
    comparisons = [_helmert(np.flatnonzero(arm_group == g), mean, n, treated, arm_study) for g in groups]
    index, u, r, n_prev = (np.concatenate([c[j] for c in comparisons]) for j in range(4))
    index = index.astype(int)
    sizes = [c[0].size for c in comparisons]
    group_start = np.repeat(np.cumsum([0, *sizes[:-1]]), sizes)
    return ArmSummaries(
        study=tuple(study),
        scale=scale,
        arm=labels,
        arm_study=arm_study,
        arm_n=n,
        arm_var=(sd / scale[arm_study]) ** 2,
        comparison=tuple(labels[j] for j in index),
        comparison_study=arm_study[index],
        contrast=u / scale[arm_study[index]],
        se_factor=r,
        comparison_n=n[index],
        n_before=n_prev,
        group_start=group_start,
    )


def _helmert(
    rows: np.ndarray, mean: np.ndarray, n: np.ndarray, treated: np.ndarray, arm_study: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Treatment-arm indices, contrasts ``u_j``, ``r_j`` and ``N_<j`` of one baseline group."""
    if np.sum(treated[rows] == 0) != 1 or np.unique(arm_study[rows]).size != 1:
        raise ValueError("every baseline group needs exactly one control arm and arms of one study")
    order = np.concatenate([rows[treated[rows] == 0], rows[treated[rows] == 1]])
    n_prev = np.cumsum(n[order])[:-1]
    mean_prev = np.cumsum(n[order] * mean[order])[:-1] / n_prev
    treat = order[1:]
    return treat, mean[treat] - mean_prev, np.sqrt(1.0 / n[treat] + 1.0 / n_prev), n_prev


def build_arm_level_model(
    data: ArmSummaries,
    *,
    tau_prior: PriorSpec,
    beta_priors: Sequence[PriorSpec],
    X: np.ndarray | None = None,
    coef_names: Sequence[str] = ("mu",),
    layout: Layout | None = None,
    omega_prior: PriorSpec | None = None,
) -> pm.Model:
    """Build the arm-level (exact small-sample) multilevel random-effects / meta-regression model.

    Parameters
    ----------
    data : ArmSummaries
        Standardised arm summaries (:func:`arm_summaries`).
    tau_prior : PriorSpec
        Prior of the between-study SD of the true SMDs; must live on ``[0, inf)``.
    beta_priors : sequence of PriorSpec
        One normal prior per coefficient (for plain random effects: the prior of ``mu``).
    X : numpy.ndarray, optional
        ``(comparisons, p)`` design, one row per comparison (treatment arm) in the order of
        ``data.comparison``; study-level moderators repeat their study's value. ``None`` means
        a column of ones (``mu``).
    coef_names : sequence of str
        Coefficient names; ``("mu",)`` for plain random effects.
    layout : Layout, optional
        Build the graph for this (larger) layout, padding as the module docstring describes, so
        that one compiled model serves every outcome of a dataset; default: the data's own.
    omega_prior : PriorSpec, optional
        Prior of the between-comparison SD within a study (on ``[0, inf)``); ``None`` builds the
        single-level model (every comparison of a study has the study's effect).

    Returns
    -------
    pymc.Model
        See the module docstring for its variables; padded entries come last in each dimension.

    Raises
    ------
    ValueError
        If ``X`` does not match the data, or the data do not fit into ``layout``.
    """
    n_comp = len(data.comparison)
    X = np.ones((n_comp, 1)) if X is None else np.asarray(X, dtype=float)
    if X.shape != (n_comp, len(coef_names)) or len(beta_priors) != len(coef_names):
        raise ValueError(f"design {X.shape} does not match {n_comp} comparisons and coefficients {list(coef_names)}")
    tau_prior.require_positive("tau")
    if omega_prior is not None:
        omega_prior.require_positive("omega")
    layout = layout or Layout.of(data)
    if not layout.holds(data):
        raise ValueError(f"{Layout.of(data)} does not fit into {layout}")
    study_pad, arm_pad, comp_pad = (layout.studies - data.k, layout.arms - len(data.arm), layout.comparisons - n_comp)
    coords = {
        "study": [*data.study, *_pad_labels("study", study_pad)],
        "arm": [*data.arm, *_pad_labels("arm", arm_pad)],
        "comparison": [*data.comparison, *_pad_labels("comparison", comp_pad)],
    }
    if not (X.shape[1] == 1 and coef_names[0] == "mu"):
        coords["coef"] = list(coef_names)
    intercept = np.eye(1, X.shape[1])
    X_study = np.vstack([data.study_rows(X), np.tile(intercept, (study_pad, 1))])
    X_comp = np.vstack([X, np.tile(intercept, (comp_pad, 1))])
    with pm.Model(coords=coords) as model:
        beta = _coefficients(beta_priors, coef_names)
        tau = tau_prior.to_pymc("tau")
        z = pm.Normal("z", 0.0, 1.0, dims="study")
        pm.Deterministic("theta", pt.dot(pm.Data("X_study", X_study), beta) + tau * z, dims="study")
        c_study = pm.Data("comparison_study", _pad(data.comparison_study, comp_pad, 0), dims="comparison")
        theta_c = pt.dot(pm.Data("X", X_comp), beta) + tau * z[c_study]
        if omega_prior is not None:
            theta_c = theta_c + omega_prior.to_pymc("omega") * pm.Normal("v", 0.0, 1.0, dims="comparison")
        theta_c = pm.Deterministic("theta_comparison", theta_c, dims="comparison")
        log_sigma = pm.Normal("log_sigma", 0.0, LOG_SIGMA_PRIOR_SD, dims="study")
        sigma = pt.exp(log_sigma)
        pm.Deterministic(
            "sigma", pm.Data("scale", _pad(data.scale, study_pad, 1.0), dims="study") * sigma, dims="study"
        )
        c_real = pm.Data("comparison_real", _pad(np.ones(n_comp), comp_pad, 0.0), dims="comparison")
        sigma_c = pt.switch(c_real > 0, sigma[c_study], 1.0)
        helmert_theta = _helmert_product(
            theta_c,
            pm.Data("comparison_n", _pad(data.comparison_n, comp_pad, 0.0), dims="comparison"),
            pm.Data("n_before", _pad(data.n_before, comp_pad, 1.0), dims="comparison"),
            pm.Data("group_start", _pad(data.group_start, comp_pad, n_comp), dims="comparison"),
        )
        mean_c = pt.switch(c_real > 0, helmert_theta * sigma_c, 0.0)
        sd_c = pm.Data("se_factor", _pad(data.se_factor, comp_pad, 1.0), dims="comparison") * sigma_c
        pm.Normal(
            "contrast",
            mu=mean_c,
            sigma=sd_c,
            observed=pm.Data("u", _pad(data.contrast, comp_pad, 0.0), dims="comparison"),
            dims="comparison",
        )
        a_study = pm.Data("arm_study", _pad(data.arm_study, arm_pad, 0), dims="arm")
        a_real = pm.Data("arm_real", _pad(np.ones(len(data.arm)), arm_pad, 0.0), dims="arm")
        df = pm.Data("arm_n", _pad(data.arm_n, arm_pad, 3.0), dims="arm") - 1.0
        rate = df / (2.0 * pt.switch(a_real > 0, sigma[a_study], 1.0) ** 2)
        pm.Gamma(
            "s2",
            alpha=df / 2.0,
            beta=rate,
            observed=pm.Data("arm_var", _pad(data.arm_var, arm_pad, 1.0), dims="arm"),
            dims="arm",
        )
    return model


def _helmert_product(
    theta_c: pt.TensorVariable, n_c: pt.TensorVariable, n_before: pt.TensorVariable, start: pt.TensorVariable
) -> pt.TensorVariable:
    """``H theta`` in O(comparisons): ``theta_j - (sum of n_a theta_a over the group's arms before j) / N_<j``.

    With ``S`` the cumulative sum of ``n theta`` (a leading 0 prepended), the arms before ``j`` in
    its group contribute ``S[j] - S[start_j]``. Padded comparisons have ``n = 0`` and start at the
    first padded index, so they add nothing to ``S`` and their own sum is empty.
    """
    cumulative = pt.concatenate([pt.zeros(1), pt.cumsum(n_c * theta_c)])
    before = cumulative[pt.arange(theta_c.shape[0])] - cumulative[start]
    return theta_c - before / n_before


def _pad(values: np.ndarray, extra: int, fill: float) -> np.ndarray:
    values = np.asarray(values)
    return np.concatenate([values, np.full(extra, fill, dtype=values.dtype)])


def _pad_labels(dim: str, extra: int) -> list[str]:
    return [f"__padding_{dim}_{j}" for j in range(extra)]


def trim_padding(idata: xr.DataTree, data: ArmSummaries) -> xr.DataTree:
    """Drop the padded studies, arms and comparisons (see the module docstring) from every group.

    Parameters
    ----------
    idata : xarray.DataTree
        Draws of a model built for a padded layout.
    data : ArmSummaries
        The data it was built with.

    Returns
    -------
    xarray.DataTree
        The same groups with the ``study``, ``arm`` and ``comparison`` dimensions cut to ``data``.
    """
    sizes = {"study": data.k, "arm": len(data.arm), "comparison": len(data.comparison)}
    groups = {}
    for name, node in idata.children.items():
        ds = node.to_dataset()
        groups[name] = ds.isel({dim: slice(0, n) for dim, n in sizes.items() if dim in ds.dims})
    return xr.DataTree.from_dict(groups)


def _coefficients(beta_priors: Sequence[PriorSpec], coef_names: Sequence[str]) -> pt.TensorVariable:
    """The coefficient vector: ``[mu]`` for plain random effects, else ``beta`` (dim ``coef``)."""
    if len(coef_names) == 1 and coef_names[0] == "mu":
        return pt.stack([beta_priors[0].to_pymc("mu")])
    betas = [prior.to_pymc(f"beta_{name}") for prior, name in zip(beta_priors, coef_names, strict=True)]
    return pm.Deterministic("beta", pt.stack(betas), dims="coef")
