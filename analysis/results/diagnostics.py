"""Convergence diagnostics of NUTS fits and the gates every fit must pass.

Gates (DESIGN.md §6): no divergent transitions, r_hat <= 1.01 and bulk ESS >= 400 for every
top-level parameter. A fit that fails is retried once with a higher target acceptance and
longer tuning (see :mod:`analysis.fitting.random_effects`) and, if it still fails, is reported as failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import xarray as xr

R_HAT_MAX = 1.01
ESS_BULK_MIN = 400
DIVERGENCES_MAX = 0


@dataclass(frozen=True)
class Diagnostics:
    """Worst-case convergence diagnostics over the checked parameters of one fit."""

    r_hat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int

    @property
    def passed(self) -> bool:
        """True if the fit passes every convergence gate."""
        return self.divergences <= DIVERGENCES_MAX and self.r_hat_max <= R_HAT_MAX and self.ess_bulk_min >= ESS_BULK_MIN

    def failures(self) -> list[str]:
        """Human-readable list of the gates this fit fails (empty if it passes)."""
        out = []
        if self.divergences > DIVERGENCES_MAX:
            out.append(f"{self.divergences} divergent transition(s)")
        if self.r_hat_max > R_HAT_MAX:
            out.append(f"r_hat {self.r_hat_max:.3f} > {R_HAT_MAX}")
        if self.ess_bulk_min < ESS_BULK_MIN:
            out.append(f"ess_bulk {self.ess_bulk_min:.0f} < {ESS_BULK_MIN}")
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict with the four numbers and ``passed``."""
        return asdict(self) | {"passed": self.passed}


def _worst(tree: xr.DataTree, *, var_names: Sequence[str], reduce: str) -> float:
    """Largest (``reduce="max"``) or smallest value of a diagnostic over all variables and elements."""
    node = tree["posterior"] if "posterior" in tree.children else tree
    values = [float(getattr(node[v], reduce)()) for v in var_names]
    return max(values) if reduce == "max" else min(values)


def diagnose(idata: xr.DataTree, var_names: Sequence[str]) -> Diagnostics:
    """Compute r_hat (rank-normalised), bulk and tail ESS and the divergence count.

    Parameters
    ----------
    idata : xarray.DataTree
        Result of ``pymc.sample`` with ``posterior`` and ``sample_stats`` groups.
    var_names : sequence of str
        Top-level parameters to check (e.g. ``["mu", "tau"]``).

    Returns
    -------
    Diagnostics
    """
    import arviz as az  # imported here: loading cached results must not pay ArviZ's import time

    names = list(var_names)
    rhat = az.rhat(idata, var_names=names)
    ess_bulk = az.ess(idata, var_names=names, method="bulk")
    ess_tail = az.ess(idata, var_names=names, method="tail")
    return Diagnostics(
        r_hat_max=_worst(rhat, var_names=names, reduce="max"),
        ess_bulk_min=_worst(ess_bulk, var_names=names, reduce="min"),
        ess_tail_min=_worst(ess_tail, var_names=names, reduce="min"),
        divergences=int(idata.sample_stats["diverging"].sum()),
    )


def engine_check(nuts: list, exact: list) -> pd.DataFrame:
    """NUTS posterior means against the exact engine, in Monte Carlo standard errors.

    Returns
    -------
    pandas.DataFrame
        Per outcome and parameter (mu, tau): exact mean, NUTS mean, MCSE of the NUTS mean,
        ``|difference| / MCSE`` and whether it is within 4 MCSE.
    """
    import arviz as az

    rows = []
    exact_by = {r.outcome.id: r for r in exact}
    for r in nuts:
        if r.posterior is None or r.outcome.id not in exact_by:
            continue
        mcse = az.mcse(r.posterior, var_names=["mu", "tau"], method="mean")
        node = mcse["posterior"] if "posterior" in mcse.children else mcse
        for param in ("mu", "tau"):
            se = float(node[param])
            reference = exact_by[r.outcome.id].summaries[param]["mean"]
            diff = r.summaries[param]["mean"] - reference
            rows.append(
                {
                    "outcome": r.outcome.id,
                    "parameter": param,
                    "exact_mean": reference,
                    "nuts_mean": r.summaries[param]["mean"],
                    "mcse": se,
                    "z_mcse": abs(diff) / se,
                    "within_4_mcse": abs(diff) <= 4 * se,
                }
            )
    return pd.DataFrame(rows)
