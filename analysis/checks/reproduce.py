r"""Reproducing a published frequentist meta-analysis the way its authors ran it.

A re-analysis starts by reproducing the published result from the same data; only then do the
Bayesian models re-analyse it. ``[outcomes.<ID>.published]`` in dataset.toml states what the paper
printed and how it computed it (:class:`analysis.dataset.load.Published`); :func:`reproduce_published`
recomputes it with metafor's estimators (:mod:`models.frequentist`) and says whether the numbers
agree to the printed precision.

The paper's route may differ from evmeta's own handling of the data, and is followed on purpose:

* ``control_n = "split"``: a control group shared by :math:`m` comparisons enters each of them with
  :math:`\lfloor n_c / m \rfloor` animals, and the comparisons are then treated as independent (a
  common frequentist correction; evmeta itself keeps the shared control once and models the
  covariance of the comparisons, Gleser & Olkin 2009). Split sizes below 2 are allowed here,
  because the paper used them; the data contract forbids them in ``arms.csv``.
* every comparison is one effect (no combining per study), pooled by ``rma(yi, vi, method)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.dataset.load import Dataset
from analysis.dataset.measures import comparison_pairs
from analysis.dataset.problems import NotApplicable
from analysis.dataset.smd import hedges_g
from analysis.results.reproduction import Reproduction
from models.frequentist import rma_uni


def paper_effects(dataset: Dataset, outcome: str, control_n: str, column: str | None = None) -> pd.DataFrame:
    """One Hedges' g per comparison (treatment − control) with the paper's control sizes.

    ``column``: a column of the treatment rows holding the control n the paper used (takes
    precedence over ``control_n``).

    Raises
    ------
    NotApplicable
        For an effect-level dataset (the arms are needed) or an outcome without comparisons.
    """
    if dataset.arms is None:
        raise NotApplicable("reproducing a published analysis needs arm-level data (arms.csv)")
    arms = dataset.arms[dataset.arms["outcome"] == outcome]
    pairs = comparison_pairs(arms)
    if pairs.empty:
        raise NotApplicable(f"no comparison reports outcome {outcome!r}")
    n_c = pairs["n_c"].to_numpy(dtype=float)
    if column is not None:
        if column not in pairs:
            raise NotApplicable(f"arms.csv has no column {column!r} with the paper's control n")
        n_c = pd.to_numeric(pairs[column], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(n_c) & (n_c >= 1)):
            raise NotApplicable(
                f"arms.csv column {column!r} must give the paper's control n (>= 1) on every treatment row"
            )
    elif control_n == "split":
        shared = pairs.groupby(["study", "control"])["arm"].transform("size").to_numpy(dtype=float)
        n_c = np.floor(n_c / shared)
    yi, vi = hedges_g(
        pairs["mean_t"].to_numpy(dtype=float),
        pairs["sd_t"].to_numpy(dtype=float),
        pairs["n_t"].to_numpy(dtype=float),
        pairs["mean_c"].to_numpy(dtype=float),
        pairs["sd_c"].to_numpy(dtype=float),
        n_c,
    )
    return pd.DataFrame({"study": pairs["study"], "arm": pairs["arm"], "n_control": n_c, "yi": yi, "vi": vi})


def reproduce_published(dataset: Dataset, outcome: str) -> Reproduction:
    """Recompute the published result of ``outcome`` the way the paper did (see the module docstring).

    Raises
    ------
    NotApplicable
        When the outcome declares no published result, or the data cannot follow the paper's route.
    """
    published = dataset.outcomes[outcome].published
    if published is None:
        raise NotApplicable(f"no published result is declared for outcome {outcome!r}")
    if dataset.effect_measure != "SMD":
        raise NotApplicable("the published result is reproduced on Hedges' g (effect_measure SMD) only")
    effects = paper_effects(dataset, outcome, published.control_n, published.control_n_column)
    fit = rma_uni(effects["yi"].to_numpy(), effects["vi"].to_numpy(), method=published.method)
    sign = dataset.outcomes[outcome].direction if published.scale == "benefit" else 1
    return Reproduction(outcome=outcome, published=published, fit=fit, sign=sign)
