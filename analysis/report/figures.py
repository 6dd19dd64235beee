"""File names of the report's figures: the one place that both the writers and the report text use.

A figure is named by its kind and, for per-outcome figures, the outcome id (``forest_BMD``); it is
written as ``figures/<stem>.svg``, the file the report links.
"""

from __future__ import annotations

FIGURES_DIR = "figures"
#: The format the report (Markdown and HTML) embeds.
LINKED_FORMAT = "svg"

#: Per-outcome figure kinds: file-name prefix -> the report's caption (alt text).
OUTCOME_FIGURES = {
    "forest": "Forest plot of {outcome}",
    "caterpillar": "Study effects of {outcome}, sorted, with the pooled effect",
    "ppc": "Posterior predictive density of {outcome}",
    "ppc_stats": "Posterior predictive test statistics of {outcome}",
    "loo_pit": "Leave-one-study-out PIT of {outcome}",
    "psense": "Power-scaling of {outcome}",
    "prior_grid": "Prior grid of {outcome}",
    "compare": "Comparison of fits of {outcome}",
    "subgroups": "Subgroups of {outcome}",
    "funnel": "Funnel plot of {outcome}",
    "influence": "Study influence for {outcome}",
}
#: Figures across outcomes: file name -> the report's caption (alt text).
RUN_FIGURES = {
    "pooled_summary": "Pooled effects of all outcomes",
    "risk_of_bias": "SYRCLE risk of bias",
    "multivariate_borrowing": "Univariate and multivariate pooled effects",
    "multivariate_correlation": "Between-study correlation matrix R",
    "multivariate_prior_posterior": "Prior against posterior of the correlation parameters",
    "multivariate_reporting_bias": "Outcome-reporting bias: multivariate minus univariate pooled effect",
}


def figure_stem(kind: str, outcome: str | None = None) -> str:
    """File stem of a figure: ``kind_outcome`` for per-outcome kinds, ``kind`` for run-wide figures.

    Raises
    ------
    ValueError
        For an unknown kind, or a per-outcome kind without an outcome (and vice versa).
    """
    if kind in OUTCOME_FIGURES and outcome is not None:
        return f"{kind}_{outcome}"
    if kind in RUN_FIGURES and outcome is None:
        return kind
    raise ValueError(f"no figure {kind!r} {'for outcome ' + outcome if outcome else 'across outcomes'}")


#: From this many studies on, the report shows compact summaries and keeps per-study figures as files.
LARGE_K = 40
#: Studies listed in the influence figure and text at large k (those whose removal shifts μ most).
INFLUENCE_ROWS = 25


def figure_path(kind: str, outcome: str | None = None, fmt: str = LINKED_FORMAT) -> str:
    """Path of a figure relative to the report folder: ``figures/forest_BMD.svg``."""
    return f"{FIGURES_DIR}/{figure_stem(kind, outcome)}.{fmt}"


def figure_link(kind: str, outcome: str | None = None) -> str:
    """Markdown image of a figure with its caption: ``![Forest plot of BMD](figures/forest_BMD.svg)``."""
    alt = OUTCOME_FIGURES[kind].format(outcome=outcome) if outcome is not None else RUN_FIGURES[kind]
    return f"![{alt}]({figure_path(kind, outcome)})"
