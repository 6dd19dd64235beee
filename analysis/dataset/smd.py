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

Two treatment arms :math:`a, b` compared with the same control :math:`c` are correlated,
because they share the control mean and the control SD enters both pooled SDs. To first
order (delta method, normal data, each comparison pooling its own two arms):

.. math::

    \operatorname{Cov}(g_a, g_b) \approx \frac{1}{n_c}
        + \frac{\delta_a \delta_b (n_c - 1)}{2\, m_a m_b}

with :math:`m_a = n_a + n_c - 2`; the estimates :math:`g` replace :math:`\delta`. The
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


def shared_control_covariance(yi: np.ndarray, vi: np.ndarray, n_treatment: np.ndarray, n_control: float) -> np.ndarray:
    """Sampling covariance matrix of several g's that share one control arm.

    Parameters
    ----------
    yi, vi : array_like
        Hedges' g and its variance for each treatment-vs-control comparison.
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
