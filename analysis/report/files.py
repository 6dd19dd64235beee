"""Writing results to disk: JSON, CSV tables, NetCDF posteriors and figures (all atomic).

This is the only module (with :mod:`analysis.report.write`) that writes files; plots return figures
and the library never saves on its own.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import write_bytes_atomic, write_text_atomic
from analysis.results.outcome import FitResult
from analysis.results.random_effects import SUMMARY_PARAMS, MetaAnalysisResult


def _clean(value: object) -> object:
    """Make a value JSON-safe: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(obj: object) -> str:
    """Deterministic JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(_clean(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path, obj: object) -> Path:
    """Write ``obj`` as deterministic JSON, atomically."""
    return write_text_atomic(Path(path), json_text(obj))


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write a table as CSV (10 significant digits, ``\\n`` line ends), atomically."""
    return write_text_atomic(Path(path), frame.to_csv(index=False, lineterminator="\n", float_format="%.10g"))


def write_figure(fig: Figure, stem: Path) -> list[Path]:
    """Save a figure as ``stem.svg`` (:data:`FIGURE_FORMATS`; deterministic bytes), atomically; the figure is closed."""
    return [write_bytes_atomic(Path(f"{stem}.{fmt}"), data) for fmt, data in figure_bytes(fig).items()]


def save_posterior(result: FitResult, path: Path) -> Path | None:
    """Save the NUTS posterior of a fit as a NetCDF DataTree (opens with ``xarray.open_datatree``).

    Returns None for exact fits, which have no draws.
    """
    if getattr(result, "posterior", None) is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        result.posterior.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def pooled_table(results: Sequence[MetaAnalysisResult]) -> pd.DataFrame:
    """One row per fit: outcome, k, engine, priors, summaries of mu/tau/theta_new/I2, P(benefit), gates."""
    rows = []
    for r in results:
        row = {
            "outcome": r.outcome.id,
            "label": r.outcome.label,
            "direction": r.outcome.direction,
            "k": r.k,
            "model": r.model,
            "engine": r.engine,
            "prior_mu": r.priors["mu"],
            "prior_tau": r.priors["tau"],
        }
        for param in SUMMARY_PARAMS:
            row.update({f"{param}_{key}": value for key, value in r.summaries[param].items()})
        row["prob_benefit"] = r.prob_benefit
        row["converged"] = r.converged
        if r.diagnostics is not None:
            row.update({f"diag_{k}": v for k, v in r.diagnostics.to_dict().items() if k != "passed"})
        rows.append(row)
    return pd.DataFrame(rows)


#: Formats every figure is written in: one, SVG (vector, text kept as text, and measured the cheaper of
#: the two to render: 4.0 s against 5.6 s of ``savefig`` for one flagship outcome's ten figures). Rendering
#: both was the largest share of a run's figure time (issue 19); PNG is one ``fig.savefig`` away, since
#: every plot function returns its figure.
FIGURE_FORMATS = ("svg",)


def figure_bytes(fig: Figure, formats: tuple[str, ...] = FIGURE_FORMATS) -> dict[str, bytes]:
    """Bytes of a figure in each of ``formats`` ("svg", "png"; deterministic metadata); the figure is closed."""
    import matplotlib
    import matplotlib.pyplot as plt

    out = {}
    try:
        for fmt in formats:
            buffer = io.BytesIO()
            metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
            # deterministic SVG element ids; text kept as text (editable, 5x smaller, 20% faster than glyph paths)
            with matplotlib.rc_context({"svg.hashsalt": "evmeta", "svg.fonttype": "none"}):
                fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
            out[fmt] = buffer.getvalue()
    finally:
        plt.close(fig)
    return out


def netcdf_bytes(result: MetaAnalysisResult) -> bytes | None:
    """The NUTS posterior of a fit as NetCDF4 bytes (h5netcdf), or None without draws."""
    if result.posterior is None:
        return None
    fd, tmp = tempfile.mkstemp(suffix=".nc")
    os.close(fd)
    try:
        result.posterior.to_netcdf(tmp, engine="h5netcdf")
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)
