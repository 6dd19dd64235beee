"""Posterior summaries with 95% equal-tailed intervals (``eti95``), from draws or exact posteriors."""

from __future__ import annotations

import numpy as np

from analysis.config import INTERVAL_PROB

SUMMARY_KEYS = ("mean", "sd", "median", "q025", "q975")


def summarize_draws(draws: np.ndarray) -> dict[str, float]:
    """Mean, SD, median and the 95% equal-tailed interval of posterior draws.

    Parameters
    ----------
    draws : numpy.ndarray
        Draws of a scalar quantity (any shape; all draws pooled).

    Returns
    -------
    dict
        Keys ``mean, sd, median, q025, q975``.
    """
    x = np.asarray(draws, dtype=float).ravel()
    tail = (1.0 - INTERVAL_PROB) / 2.0
    lo, med, hi = np.quantile(x, [tail, 0.5, 1.0 - tail])
    return {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)),
        "median": float(med),
        "q025": float(lo),
        "q975": float(hi),
    }


def prob_benefit_from_draws(mu: np.ndarray, direction: int) -> float:
    """P(pooled effect favours treatment): P(mu > 0) if higher is better, P(mu < 0) if lower is."""
    mu = np.asarray(mu, dtype=float).ravel()
    return float(np.mean(mu > 0) if direction > 0 else np.mean(mu < 0))
