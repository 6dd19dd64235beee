r"""Standardised mean difference (Hedges' g) and its sampling (co)variance, vectorised.

For a treatment arm (mean :math:`m_1`, SD :math:`s_1`, size :math:`n_1`) and a control arm
(:math:`m_2, s_2, n_2`), with :math:`m = n_1 + n_2 - 2`:

.. math::

    s_p = \sqrt{\frac{(n_1-1)s_1^2 + (n_2-1)s_2^2}{m}}, \qquad
    d = \frac{m_1 - m_2}{s_p}, \qquad
    J(m) = \frac{\Gamma(m/2)}{\sqrt{m/2}\,\Gamma((m-1)/2)}, \qquad g = J(m)\,d,

    v = \frac{1}{n_1} + \frac{1}{n_2} + \frac{g^2}{2(n_1+n_2)}

which is metafor's ``escalc(measure="SMD")`` with its default large-sample variance
(``vtype="LS"``). SEM is converted to SD by :math:`SD = SEM\sqrt{n}`.

Because :math:`v` contains :math:`g^2`, a study's weight :math:`1/(v+\tau^2)` is correlated with
its estimate (larger :math:`|g|`, smaller weight), which biases the pooled SMD towards zero in
small samples. metafor's ``vtype="AV"`` removes that correlation by replacing :math:`g` in the
variance by the sample-size-weighted mean effect of the :math:`k` comparisons analysed together
(metafor 3.8-1: ``mnwyi <- .wmean(yi, ni)`` over all rows of the ``escalc`` call, ``ni = n1i + n2i``):

.. math::

    \bar g_w = \frac{\sum_j (n_{1j}+n_{2j})\, g_j}{\sum_j (n_{1j}+n_{2j})}, \qquad
    v^{AV}_i = \frac{1}{n_{1i}} + \frac{1}{n_{2i}} + \frac{\bar g_w^2}{2(n_{1i}+n_{2i})}

Two treatment arms :math:`a, b` compared with the same control :math:`c` are correlated,
because they share the control mean and the control SD enters both pooled SDs. To first
order (delta method, normal data, each comparison pooling its own two arms):

.. math::

    \operatorname{Cov}(g_a, g_b) \approx \frac{1}{n_c}
        + \frac{\delta_a \delta_b (n_c - 1)}{2\, m_a m_b}

with :math:`m_a = n_a + n_c - 2`; the estimates :math:`g` replace :math:`\delta` (with the AV
variance, :math:`\bar g_w` replaces both, as in the diagonal). The
first term is the shared control mean, the second the shared control variance (Gleser &
Olkin 2009, in *The Handbook of Research Synthesis and Meta-Analysis*, ch. 19; the same
structure as metaSEM's ``smdMTS``). The J factors cancel to first order (J corrects the
mean of :math:`1/s_p`), exactly as in the diagonal analogue, metafor's ``v`` above.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def sd_from_sem(sem: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Convert standard errors of the mean to standard deviations, ``SD = SEM * sqrt(n)``."""
    return np.asarray(sem, dtype=float) * np.sqrt(np.asarray(n, dtype=float))


def correction_j(m: np.ndarray) -> np.ndarray:
    """Exact small-sample bias correction ``J(m) = Γ(m/2) / (sqrt(m/2) Γ((m-1)/2))``."""
    m = np.asarray(m, dtype=float)
    return np.exp(gammaln(m / 2.0) - 0.5 * np.log(m / 2.0) - gammaln((m - 1.0) / 2.0))


def pooled_sd(sd1: np.ndarray, n1: np.ndarray, sd2: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Pooled within-group standard deviation of two arms."""
    sd1, n1, sd2, n2 = (np.asarray(a, dtype=float) for a in (sd1, n1, sd2, n2))
    return np.sqrt(((n1 - 1.0) * sd1**2 + (n2 - 1.0) * sd2**2) / (n1 + n2 - 2.0))


def hedges_g(
    m1: np.ndarray, sd1: np.ndarray, n1: np.ndarray, m2: np.ndarray, sd2: np.ndarray, n2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hedges' g (treatment 1 minus control 2) and metafor's "LS" sampling variance.

    Parameters
    ----------
    m1, sd1, n1 : array_like
        Mean, standard deviation and size of the treatment arm(s).
    m2, sd2, n2 : array_like
        Mean, standard deviation and size of the control arm(s).

    Returns
    -------
    yi, vi : numpy.ndarray
        Bias-corrected SMD and its sampling variance.
    """
    n1 = np.asarray(n1, dtype=float)
    n2 = np.asarray(n2, dtype=float)
    d = (np.asarray(m1, dtype=float) - np.asarray(m2, dtype=float)) / pooled_sd(sd1, n1, sd2, n2)
    yi = correction_j(n1 + n2 - 2.0) * d
    vi = 1.0 / n1 + 1.0 / n2 + yi**2 / (2.0 * (n1 + n2))
    return yi, vi


def weighted_mean_effect(yi: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> float:
    """Sample-size-weighted mean effect ``sum((n1 + n2) * yi) / sum(n1 + n2)`` (metafor's ``mnwyi``).

    Parameters
    ----------
    yi : array_like
        Hedges' g of the comparisons analysed together (e.g. all comparisons of one outcome).
    n1, n2 : array_like
        Sizes of the treatment and control arm of each comparison.

    Returns
    -------
    float
        The weighted mean; rows with a missing ``yi`` are left out, as ``na.rm = TRUE`` in metafor.
    """
    yi = np.asarray(yi, dtype=float)
    ni = np.asarray(n1, dtype=float) + np.asarray(n2, dtype=float)
    ok = np.isfinite(yi) & np.isfinite(ni)
    if not ok.any():
        raise ValueError("the weighted mean effect needs at least one finite effect")
    return float(np.sum(yi[ok] * ni[ok]) / np.sum(ni[ok]))


def average_variance(yi: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> tuple[np.ndarray, float]:
    """metafor's ``vtype="AV"`` sampling variance of Hedges' g (see the module docstring).

    Parameters
    ----------
    yi : array_like
        Hedges' g of the comparisons analysed together (one outcome).
    n1, n2 : array_like
        Sizes of the treatment and control arm of each comparison.

    Returns
    -------
    vi : numpy.ndarray
        ``1/n1 + 1/n2 + g_w^2 / (2 (n1 + n2))`` for every comparison.
    g_w : float
        The weighted mean effect :func:`weighted_mean_effect` that replaces each ``g`` in the variance.
    """
    n1 = np.asarray(n1, dtype=float)
    n2 = np.asarray(n2, dtype=float)
    g_w = weighted_mean_effect(yi, n1, n2)
    return 1.0 / n1 + 1.0 / n2 + g_w**2 / (2.0 * (n1 + n2)), g_w


def shared_control_covariance(yi: np.ndarray, vi: np.ndarray, n_treatment: np.ndarray, n_control: float) -> np.ndarray:
    """Sampling covariance matrix of several g's that share one control arm.

    Parameters
    ----------
    yi, vi : array_like
        Hedges' g and its variance for each treatment-vs-control comparison. With metafor's
        "AV" variance pass the weighted mean effect (repeated) as ``yi``, so that the
        covariance uses the same effect as the variance.
    n_treatment : array_like
        Size of each treatment arm.
    n_control : float
        Size of the shared control arm.

    Returns
    -------
    numpy.ndarray
        Matrix with ``vi`` on the diagonal and the Gleser–Olkin covariance off it (see the
        module docstring).
    """
    yi = np.asarray(yi, dtype=float)
    m = np.asarray(n_treatment, dtype=float) + n_control - 2.0
    cov = 1.0 / n_control + np.outer(yi, yi) * (n_control - 1.0) / (2.0 * np.outer(m, m))
    np.fill_diagonal(cov, np.asarray(vi, dtype=float))
    return cov
