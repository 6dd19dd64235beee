"""Three-level model versus metafor's ``rma.mv(random = ~ 1 | study/comparison)`` (REML) on real data.

Data: ``data/fst_martins2025`` (Martins et al. 2025, forced swim test), outcome ``immobility``:
200 studies, 561 comparisons (115 studies with 2-18 comparisons), Hedges' g with Gleser–Olkin
covariances for the 390 pairs of comparisons sharing a control arm. evmeta's comparison-level
``yi``, ``vi`` and covariances are written to ``reference_data/metafor_rma_mv_multilevel_effects.csv``
and ``..._cov.csv`` (``python -m tests.test_reference_metafor_rma_mv_multilevel``), and
``reference_data/metafor_rma_mv_multilevel.R`` (R 4.2.2, metafor 3.8-1) builds V from them and
fits ``rma.mv(yi, V, random = ~ 1 | study / comparison, method = "REML")``, and the same with the
centred comparison-level moderator ``tricyclic`` (drug class tricyclic vs any other).

Priors of the Bayesian fits: nearly flat, mu (and the intercept) ~ N(0, 100²), slope ~ N(0, 1)
(the default slope scale; metafor's slope SE is 0.14), tau and omega ~ Uniform(0, 10). With a
flat prior on mu the marginal posterior of (tau, omega) is proportional to the restricted
likelihood, so REML is its joint mode and the posterior means differ from REML only through the
skewness of that posterior: by O(s²) relative, s = posterior SD / estimate (~0.08 for tau, ~0.07
for omega here), computed exactly by the quadrature engine (``models/exact/multilevel.py``): +0.8%
for tau and +0.5% for omega. Tolerances (``tests/tolerances.py``): mu within
``BAYES_VS_REML_SE_FRACTION`` of metafor's SE; tau and omega within ``MULTILEVEL_SD_VS_REML_REL``
relative. NUTS is also checked against the exact posterior means within ``MCSE_MULTIPLE`` Monte
Carlo standard errors (no REML approximation involved).

The NUTS fits sample 4 x 1000 draws after 1000 tuning steps each, with the default
``form="spectral"`` evaluation of the padded likelihood (~45 s per fit on a shared 2-core machine,
compilation included; the same likelihood as one batched ``pm.MvNormal`` costs ~50 times more
per gradient, see :data:`models.multilevel.FORMS`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.multilevel import comparison_covariance, fit_multilevel
from models.exact.multilevel import exact_multilevel_posterior
from models.priors import PriorSet, PriorSpec
from tests.tolerances import (
    BAYES_VS_REML_SE_FRACTION,
    EFFECT_SIZE_ABS,
    GATE_DIVERGENCES_MAX,
    GATE_ESS_BULK_MIN,
    GATE_R_HAT_MAX,
    MCSE_MULTIPLE,
    MULTILEVEL_SD_VS_REML_REL,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference_data"
EFFECTS_CSV = REFERENCE / "metafor_rma_mv_multilevel_effects.csv"
COV_CSV = REFERENCE / "metafor_rma_mv_multilevel_cov.csv"
DATASET, OUTCOME = "data/fst_martins2025", "immobility"
FLAT = PriorSet(
    mu=PriorSpec.parse("normal:0:100"), tau=PriorSpec.parse("uniform:0:10"), omega=PriorSpec.parse("uniform:0:10")
)
SEED = 2025


def reference_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """evmeta's comparisons (with drug class) and off-diagonal covariances of the FST outcome."""
    dataset = load_dataset(ROOT / DATASET)
    table = compute_effects(dataset)
    rows = table.data[table.data["outcome"] == OUTCOME]
    arms = dataset.arms[dataset.arms["role"] == "treatment"][["study", "arm", "drug_class"]]
    effects = rows[["study", "comparison", "yi", "vi"]].merge(
        arms.rename(columns={"arm": "comparison"}), on=["study", "comparison"], how="left", validate="1:1"
    )
    cov = table.covariance_long()
    return effects, cov[cov["outcome"] == OUTCOME][["study", "comparison_1", "comparison_2", "cov"]]


def _reml() -> dict:
    return json.loads((REFERENCE / "metafor_rma_mv_multilevel.json").read_text(encoding="utf-8"))


def test_reference_input_is_what_evmeta_computes():
    """The CSV metafor read still equals evmeta's effects (else rerun this module's main and the R script)."""
    effects, cov = reference_tables()
    stored = pd.read_csv(EFFECTS_CSV, dtype={"study": str, "comparison": str})
    stored_cov = pd.read_csv(COV_CSV, dtype={"study": str, "comparison_1": str, "comparison_2": str})
    assert list(stored[["study", "comparison", "drug_class"]].itertuples(index=False)) == list(
        effects[["study", "comparison", "drug_class"]].itertuples(index=False)
    )
    np.testing.assert_allclose(stored[["yi", "vi"]], effects[["yi", "vi"]], rtol=0, atol=EFFECT_SIZE_ABS)
    assert list(stored_cov.iloc[:, :3].itertuples(index=False)) == list(cov.iloc[:, :3].itertuples(index=False))
    np.testing.assert_allclose(stored_cov["cov"], cov["cov"], rtol=0, atol=EFFECT_SIZE_ABS)
    ref = _reml()
    assert ref["k"] == len(effects) == 561 and ref["multilevel"]["n_studies"] == 200


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(ROOT / DATASET)


@pytest.fixture(scope="module")
def fit(dataset):
    return fit_multilevel(dataset, OUTCOME, priors=FLAT, seed=SEED)


@pytest.fixture(scope="module")
def exact(dataset):
    rows, V = comparison_covariance(compute_effects(dataset), OUTCOME)
    return exact_multilevel_posterior(
        rows["yi"].to_numpy(), V, list(rows["study"]), mu_prior=FLAT.mu, tau_prior=FLAT.tau, omega_prior=FLAT.omega
    )


def _gates(result) -> None:
    d = result.diagnostics
    assert (
        d.divergences <= GATE_DIVERGENCES_MAX and d.r_hat_max <= GATE_R_HAT_MAX and d.ess_bulk_min >= GATE_ESS_BULK_MIN
    ), d


@pytest.mark.slow
def test_converges(fit):
    assert fit.settings["omega_identified"] and fit.settings["slots"] == 18
    _gates(fit)


@pytest.mark.slow
def test_mu_near_reml(fit):
    ref = _reml()["multilevel"]
    gap = abs(fit.summaries["mu"]["mean"] - ref["coef"])
    assert gap <= BAYES_VS_REML_SE_FRACTION * ref["se"], gap / ref["se"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "key"), [("tau", "tau2"), ("omega", "omega2")])
def test_sd_near_reml(fit, name, key):
    reml = np.sqrt(_reml()["multilevel"][key])
    assert abs(fit.summaries[name]["mean"] / reml - 1.0) <= MULTILEVEL_SD_VS_REML_REL, (name, fit.summaries[name], reml)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mu", "tau", "omega"])
def test_nuts_matches_exact_posterior(fit, exact, name):
    draws = fit.posterior.posterior[name]
    mcse = float(az.mcse(draws.to_numpy(), method="mean"))
    gap = abs(float(draws.mean()) - exact.summary(name)["mean"])
    assert gap <= MCSE_MULTIPLE * mcse, (name, gap, mcse)


@pytest.mark.slow
def test_meta_regression_near_reml(dataset):
    ref = _reml()["regression"]
    effects, _ = reference_tables()
    tricyclic = effects["drug_class"].eq("tricyclic").to_numpy(dtype=float)
    X = np.column_stack([np.ones(len(effects)), tricyclic - tricyclic.mean()])
    result = fit_multilevel(dataset, OUTCOME, priors=FLAT, X=X, coef_names=["intercept", "tricyclic"], seed=SEED)
    _gates(result)
    for j, name in enumerate(["intercept", "tricyclic"]):
        gap = abs(result.settings["beta"][name]["mean"] - ref["coef"][j])
        assert gap <= BAYES_VS_REML_SE_FRACTION * ref["se"][j], (name, gap / ref["se"][j])
    for name, key in (("tau", "tau2"), ("omega", "omega2")):
        assert abs(result.summaries[name]["mean"] / np.sqrt(ref[key]) - 1.0) <= MULTILEVEL_SD_VS_REML_REL, name


def main() -> None:
    """Write the two reference CSVs that ``metafor_rma_mv_multilevel.R`` reads."""
    effects, cov = reference_tables()
    effects.to_csv(EFFECTS_CSV, index=False, float_format="%.17g")
    cov.to_csv(COV_CSV, index=False, float_format="%.17g")
    print(f"wrote {EFFECTS_CSV} ({len(effects)} comparisons) and {COV_CSV} ({len(cov)} pairs)", file=sys.stderr)


if __name__ == "__main__":
    main()
