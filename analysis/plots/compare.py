"""Figure comparing fits of one outcome: ArviZ forest plot of mu and tau with a ``model`` dimension.

Figures are returned, never saved.
"""

from __future__ import annotations

from collections.abc import Mapping

import arviz as az
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.results.random_effects import MetaAnalysisResult
from models.exact.posterior import exact_posterior
from models.priors import PriorSpec


def draws_tree(result: MetaAnalysisResult, *, n: int = 4000, seed: int = 1) -> xr.DataTree:
    """``n`` posterior draws of μ and τ as a one-chain DataTree (NUTS draws, or exact draws).

    All fits get the same shape so that ArviZ can stack them along a ``model`` dimension.
    NUTS draws are pooled over chains and, if there are more than ``n``, thinned evenly.
    """
    if result.posterior is not None:
        post = result.posterior.posterior
        mu, tau = post["mu"].to_numpy().ravel(), post["tau"].to_numpy().ravel()
        keep = np.linspace(0, mu.size - 1, min(n, mu.size)).round().astype(int)
        mu, tau = mu[keep], tau[keep]
    else:
        post = exact_posterior(
            result.studies["yi"],
            result.studies["vi"],
            tau_prior=PriorSpec.parse(result.priors["tau"]),
            mu_prior=PriorSpec.parse(result.priors["mu"]),
        )
        draws = post.sample(n, rng=np.random.default_rng(seed))
        mu, tau = draws["mu"], draws["tau"]
    return az.from_dict({"posterior": {"mu": mu[None, :], "tau": tau[None, :]}})


def compare_forest(results: Mapping[str, MetaAnalysisResult]) -> Figure:
    """ArviZ forest plot of μ and τ with a ``model`` dimension (one entry per labelled fit)."""
    sizes = [r.posterior.posterior.sizes for r in results.values() if r.posterior is not None]
    n = min([4000, *(s["chain"] * s["draw"] for s in sizes)])
    trees = {label: draws_tree(r, n=n) for label, r in results.items()}
    pc = az.plot_forest(
        trees, var_names=["mu", "tau"], combined=True, ci_kind="eti", ci_probs=(0.5, 0.95), backend="matplotlib"
    )
    pc.add_legend("model")
    fig = pc.viz["figure"].item()
    outcome = next(iter(results.values())).outcome.id
    fig.suptitle(f"{outcome}: posterior of μ and τ by fit (50% and 95% ETI)")
    return fig
