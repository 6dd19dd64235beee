"""NUTS sampler settings and the convergence-gated sampling every NUTS fit goes through.

NUTS fits are checked against the convergence gates of :mod:`analysis.results.diagnostics`; a fit
that fails is retried once with ``target_accept=0.99`` and twice the tuning and draws, and if it
still fails it is returned marked as failed (never silently).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pymc as pm
import xarray as xr

from analysis.fitting.nuts import sample_nuts
from analysis.results.diagnostics import diagnose


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings; the defaults give 4 x 1000 draws, enough for ESS >= 400 on these models.

    ``target_accept`` defaults to 0.95 (brms users raise ``adapt_delta`` likewise for small k):
    with few studies the curvature of the marginal posterior changes quickly as tau -> 0, and
    at 0.8-0.9 a few divergences appear there (seen on k = 4-6 outcomes of the default data).
    """

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    target_accept: float = 0.95

    def __post_init__(self) -> None:
        if min(self.draws, self.tune, self.chains) < 1 or not 0.5 <= self.target_accept < 1.0:
            raise ValueError(f"invalid sampler settings {self}")


def sample_model(model: pm.Model, *, seed: int, sampler: SamplerSettings, progressbar: bool) -> xr.DataTree:
    """Run NUTS on ``model`` with nutpie (chains in sequence on one core) and return the DataTree.

    The compiled model is reused for later models of the same structure (:mod:`analysis.fitting.nuts`).
    """
    return sample_nuts(
        model,
        draws=sampler.draws,
        tune=sampler.tune,
        chains=sampler.chains,
        target_accept=sampler.target_accept,
        seed=seed,
        progressbar=progressbar,
    )


def sample_with_retry(
    model: pm.Model, var_names: list[str], *, seed: int, sampler: SamplerSettings, progressbar: bool
) -> tuple[xr.DataTree, SamplerSettings, bool]:
    """Sample; if a convergence gate fails, retry once with target_accept 0.99 and doubled tuning and draws."""
    idata = sample_model(model, seed=seed, sampler=sampler, progressbar=progressbar)
    if diagnose(idata, var_names).passed:
        return idata, sampler, False
    careful = replace(
        sampler, target_accept=max(sampler.target_accept, 0.99), tune=2 * sampler.tune, draws=2 * sampler.draws
    )
    return sample_model(model, seed=seed, sampler=careful, progressbar=progressbar), careful, True
