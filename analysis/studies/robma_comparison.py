"""evmeta's bias-averaged ensemble beside R's RoBMA-PSMA default ensemble on the same data.

``python -m analysis.studies.robma_comparison`` reads ``../shared/reference/robma_reference.json``
(RoBMA 3.6.1, JAGS, bridge sampling; made by ``make_robma_reference.R``) and fits, to each data set
whose RoBMA ensemble finished (RoBMA's examples Bem2011 and Poulsen2006, and outcomes of the
SIMULATED flagship dataset, first comparison per study as RoBMA was given them):

* ``evmeta default``: the ensemble as ``evmeta fit --model bias-averaged`` runs it (mu ~ N(0, 3^2),
  tau ~ HalfNormal(1); selection on t-test p-values where group sizes are known; PET/PEESE only
  when k >= 10 and sqrt(1/n~) spans a factor 2);
* ``evmeta, RoBMA's priors``: mu ~ N(0, 1), tau ~ InvGamma(1, 0.15), PET/PEESE always in, on the
  SE, normal-test p-values -- i.e. RoBMA's single models on the d scale, averaged with our two
  one-sided weight functions instead of RoBMA's six (two of them two-sided).

What remains between the second row and RoBMA is RoBMA's own construction: its default fits the
data on Fisher's z (d is transformed, priors stay on d), and its bias component holds six weight
functions (1/12 each) and PET and PEESE (1/4 each). Writes ``reports/robma_comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from analysis.config import REPORTS_DIR
from analysis.dataset.load import Outcome
from analysis.fitting.bias_averaged import fit_bias_averaged_effects
from analysis.report.files import write_json
from analysis.studies.benchmark import ROBMA_REFERENCE
from models.bias_models import EnsemblePriors
from models.priors import PriorSpec

__all__ = ["ROBMA_PRIORS", "compare", "datasets"]

#: RoBMA-PSMA's default priors of the effect and the heterogeneity (on Cohen's d).
ROBMA_PRIORS = EnsemblePriors(mu=PriorSpec.parse("normal:0:1"), tau=PriorSpec.parse("invgamma:1:0.15"))


def datasets(reference: dict) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Name -> (effects table, RoBMA's ensemble summary) of every data set with a finished ensemble."""
    out = {}
    groups = [("", reference["examples"]), ("flagship ", reference["flagship"]["outcomes"])]
    for prefix, entries in groups:
        for name, entry in entries.items():
            ensemble = entry.get("default_ensemble")
            if not ensemble:
                continue
            data = entry["data"]
            frame = pd.DataFrame({"study": data["study"], "yi": data["d"], "vi": [s**2 for s in data["se"]]})
            if "n_treatment" in data:
                frame["n_treatment"], frame["n_control"] = data["n_treatment"], data["n_control"]
            out[prefix + name] = (frame, ensemble)
    return out


def _row(label: str, mu: dict, bf: dict) -> dict:
    return {
        "fit": label,
        "mu_mean": mu["mean"],
        "mu_q025": mu["q025"],
        "mu_q975": mu["q975"],
        "bf_effect": bf["effect"],
        "bf_heterogeneity": bf["heterogeneity"],
        "bf_bias": bf["bias"],
    }


def compare(effects: pd.DataFrame, robma: dict) -> list[dict]:
    """RoBMA's ensemble, evmeta's default and evmeta with RoBMA's priors on one data set."""
    outcome = Outcome("d", "d", "", 1)
    ma, comp = robma["model_averaged"]["mu"], robma["components"]
    rows = [
        _row(
            "RoBMA 3.6.1 default ensemble (Fisher z, 36 models)",
            ma,
            {c: comp[c]["inclusion_BF"] for c in ("effect", "heterogeneity", "bias")},
        )
    ]
    default = fit_bias_averaged_effects(effects, outcome=outcome, measure="SMD")
    rows.append(_row("evmeta default", default.mu, default.inclusion_bf))
    robma_like = fit_bias_averaged_effects(
        effects.drop(columns=["n_treatment", "n_control"], errors="ignore"),
        outcome=outcome,
        measure="SMD",
        priors=ROBMA_PRIORS,
    )
    rows.append(_row("evmeta, RoBMA's priors, z tests, PET/PEESE on SE", robma_like.mu, robma_like.inclusion_bf))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line: compare on every finished RoBMA ensemble and write the JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.studies.robma_comparison", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reference", type=Path, default=ROBMA_REFERENCE)
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)
    reference = json.loads(args.reference.read_text())
    results = {name: compare(effects, robma) for name, (effects, robma) in datasets(reference).items()}
    write_json(args.out_dir / "robma_comparison.json", {"source": str(args.reference.name), "datasets": results})
    for name, rows in results.items():
        print(name)
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
