"""Convergence diagnostics of NUTS fits and the gates every fit must pass.

Gates (DESIGN.md §6): no divergent transitions, r_hat <= 1.01 and bulk ESS >= 400 for every
top-level parameter. A fit that fails is retried once with a higher target acceptance and
longer tuning (see :mod:`analysis.fit`) and, if it still fails, is reported as failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import arviz as az
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
        return (
            self.divergences <= DIVERGENCES_MAX
            and self.r_hat_max <= R_HAT_MAX
            and self.ess_bulk_min >= ESS_BULK_MIN
        )

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
