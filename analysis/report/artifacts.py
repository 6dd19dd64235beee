"""What the report is made of: each outcome's analysis rendered to bytes, tables and text.

An :class:`OutcomeArtifacts` is what the report needs of one outcome, with no live model or
posterior object in it, so it can be computed in a worker process, pickled into the cache and
assembled into the report later (:mod:`analysis.report.write`); :class:`RunResult` gathers them
for a whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.dataset.effects import EffectTable
from analysis.dataset.load import Dataset
from analysis.fitting.sampling import SamplerSettings
from analysis.results.random_effects import MetaAnalysisResult
from models.priors import PriorSet


@dataclass
class OutcomeArtifacts:
    """Everything the report shows of one outcome (plain data: picklable, cacheable)."""

    outcome: str
    nuts: MetaAnalysisResult | None
    exact: MetaAnalysisResult
    markdown: list[str]
    figures: dict[str, dict[str, bytes]]
    tables: dict[str, pd.DataFrame]
    jsons: dict[str, dict]
    posterior_nc: bytes | None
    timings: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    arm: MetaAnalysisResult | None = None

    @property
    def primary(self) -> MetaAnalysisResult:
        """The fit the report leads with: the default (arm-level) fit, else the normal NUTS fit, else exact."""
        return self.arm or self.nuts or self.exact


@dataclass
class MultivariateArtifacts:
    """The multivariate model across outcomes, rendered (plain data: picklable, cacheable)."""

    outcomes: tuple[str, ...]
    converged: bool
    markdown: list[str]
    figures: dict[str, dict[str, bytes]]
    tables: dict[str, pd.DataFrame]
    json: dict
    posterior_nc: bytes | None
    timings: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False


@dataclass
class RunResult:
    """Everything ``evmeta run`` computed, ready for the report."""

    dataset: Dataset
    table: EffectTable
    outcomes: dict[str, OutcomeArtifacts]
    skipped: dict[str, str]
    seed: int
    priors: PriorSet
    sampler: SamplerSettings
    timings: dict[str, float] = field(default_factory=dict)
    key: str = ""
    multivariate: MultivariateArtifacts | None = None
    engine: str = "nuts"
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> list[MetaAnalysisResult]:
        """The primary random-effects fit of every analysed outcome (default model; exact with ``--engine exact``)."""
        return [a.primary for a in self.outcomes.values()]

    @property
    def exact(self) -> list[MetaAnalysisResult]:
        """The exact-engine fit of every analysed outcome."""
        return [a.exact for a in self.outcomes.values()]

    @property
    def failed(self) -> list[str]:
        """Outcomes whose NUTS fit failed a convergence gate (after the retry)."""
        failed = [r.outcome.id for r in self.primary if not r.converged]
        return failed + (
            ["multivariate model"] if self.multivariate is not None and not self.multivariate.converged else []
        )
