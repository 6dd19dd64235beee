"""NUTS sampling of PyMC models with nutpie, compiling each model structure once per process.

PyMC's own NUTS runs the sampler loop in Python: ~1.4 s for 4 x (1000 + 1000) iterations of
the two-parameter marginal random-effects model, and ~5 s for the arm-level model. nutpie runs
the same algorithm (NUTS with diagonal mass-matrix and step-size adaptation) in Rust on a
numba-compiled log density and gradient, which takes ~0.1 s and ~0.3 s for the same fits,
but compiling costs ~5 s per model.

So compiled models are cached per process by a **structural fingerprint** of the PyMC model: the
log-density and deterministic graphs with every constant's value, the names, dtypes and ranks of
the data containers (``pm.Data``) and the shape of every free variable. Two models with the same
fingerprint differ only in the values (and lengths) of their data containers, so the cached
compiled model is reused with the new data (``CompiledModel.with_data``) instead of compiled
again: the random-effects model of every outcome and prior setting with the same prior families
and hyperparameters, the selection model of every outcome, the multivariate model over its
within-study correlation grid. A model that bakes data into its graph as constants gets its own
fingerprint, so reuse can cost speed but never correctness.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pymc as pm
import xarray as xr
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant
from pytensor.graph.traversal import ancestors
from pytensor.printing import debugprint

if TYPE_CHECKING:
    from nutpie.compiled_pyfunc import PyFuncModel as CompiledModel

__all__ = ["CACHE_SIZE", "clear_cache", "compiled_model", "model_fingerprint", "sample_nuts"]

#: Compiled models kept per process (least recently used are dropped first).
CACHE_SIZE = 16
_CACHE: OrderedDict[tuple[str, tuple[str, ...] | None], object] = OrderedDict()
#: Seconds this process has spent compiling models (nutpie), for the run's "where the time goes".
_COMPILE_SECONDS = [0.0]


def _outputs(model: pm.Model) -> list:
    return [model.logp(), *model.deterministics]


def _shared_inputs(outputs: list) -> list[SharedVariable]:
    """Data containers the log density and deterministics (``outputs``) depend on, in graph order."""
    seen, out = set(), []
    for var in ancestors(outputs):
        if isinstance(var, SharedVariable) and var.name not in seen:
            seen.add(var.name)
            out.append(var)
    return out


def model_fingerprint(model: pm.Model) -> str:
    """SHA-256 of everything that a compiled model fixes, i.e. all but the data containers' values.

    Parameters
    ----------
    model : pymc.Model

    Returns
    -------
    str
        Equal for two models only if one compiled model serves both after swapping the values
        (and lengths) of their ``pm.Data`` containers; models built by the same builder with
        the same priors and static shapes share it.
    """
    return _fingerprint(model, _outputs(model))


def _fingerprint(model: pm.Model, outputs: list) -> str:
    digest = hashlib.sha256()
    digest.update(debugprint(outputs, file="str", print_type=True).encode())
    for var in ancestors(outputs):
        if isinstance(var, Constant):
            data = np.asarray(var.data)
            digest.update(f"{data.dtype}{data.shape}".encode() + data.tobytes())
    for var in _shared_inputs(outputs):
        value = np.asarray(var.get_value(borrow=True))
        digest.update(f"{var.name}:{value.dtype}:{value.ndim}".encode())
    for name, value in model.initial_point().items():
        digest.update(f"{name}{np.shape(value)}".encode())
    return digest.hexdigest()


def compile_seconds() -> float:
    """Seconds this process has spent in nutpie's model compilation so far (cache misses only)."""
    return _COMPILE_SECONDS[0]


def clear_cache() -> None:
    """Drop every compiled model of this process."""
    _CACHE.clear()


def compiled_model(model: pm.Model, var_names: Sequence[str] | None = None) -> CompiledModel:
    """A nutpie compiled model for ``model``'s structure, holding ``model``'s current data.

    Parameters
    ----------
    model : pymc.Model
    var_names : sequence of str, optional
        Variables to store (default: every free variable and deterministic).

    Returns
    -------
    nutpie.CompiledModel
        From the per-process cache if a model of the same structure was compiled before.
    """
    import nutpie

    outputs = _outputs(model)
    key = (_fingerprint(model, outputs), None if var_names is None else tuple(var_names))
    compiled = _CACHE.get(key)
    if compiled is None:
        started = time.perf_counter()
        compiled = nutpie.compile_pymc_model(model, var_names=None if var_names is None else list(var_names))
        _COMPILE_SECONDS[0] += time.perf_counter() - started
        _CACHE[key] = compiled
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    wanted = {var.name for var in compiled.shared_var_keys}
    return compiled.with_data(
        **{var.name: np.asarray(var.get_value()) for var in _shared_inputs(outputs) if var.name in wanted}
    )


def sample_nuts(
    model: pm.Model,
    *,
    draws: int,
    tune: int,
    chains: int,
    target_accept: float,
    seed: int,
    progressbar: bool = False,
    var_names: Sequence[str] | None = None,
) -> xr.DataTree:
    """Run nutpie's NUTS on ``model`` and return its DataTree.

    Parameters
    ----------
    model : pymc.Model
        Model with only continuous free variables.
    draws, tune, chains : int
        Kept draws and warm-up iterations per chain, and the number of chains (run one after
        another on one thread, so that the pipeline's worker processes own one core each).
    target_accept : float
        Target acceptance rate of the step-size adaptation.
    seed : int
        Seed; the same seed and data give the same draws.
    progressbar : bool
        Show nutpie's progress display.
    var_names : sequence of str, optional
        Variables to store (default all).

    Returns
    -------
    xarray.DataTree
        ``posterior`` (free variables on their natural scale and deterministics, dims
        ``chain, draw, ...``), ``sample_stats`` (including ``diverging``), ``observed_data``
        and ``constant_data``, as ``pm.sample`` returns them.
    """
    import nutpie
    from pymc.backends.arviz import patch_nutpie_idata

    compiled = compiled_model(model, var_names)
    started = time.perf_counter()
    trace = nutpie.sample(
        compiled,
        draws=draws,
        tune=tune,
        chains=chains,
        cores=1,
        seed=seed,
        target_accept=target_accept,
        progress_bar=progressbar,
        save_warmup=False,
    )
    # what pm.sample(nuts_sampler="nutpie") adds: observed_data and constant_data from the model
    patch_nutpie_idata(trace, model, time.perf_counter() - started)
    return _with_model_coords(trace, model)


def _with_model_coords(trace: xr.DataTree, model: pm.Model) -> xr.DataTree:
    """Label draws with ``model``'s coordinates: a cached compiled model has those of the model it was compiled from."""
    for name, node in trace.children.items():
        ds = node.to_dataset()
        labels = {
            dim: list(model.coords[dim]) for dim in ds.dims if dim in model.coords and model.coords[dim] is not None
        }
        trace[name] = xr.DataTree(ds.assign_coords(labels))
    return trace
