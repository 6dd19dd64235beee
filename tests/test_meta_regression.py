"""Meta-regression: design coding, priors, derived quantities on a tiny dataset, truth recovery.

Design coding and priors are checked on hand-built tables; subgroup means, contrasts, their
probabilities and R² against closed forms on a tiny dataset (exact engine, near-flat
coefficient priors and a near-zero tau prior: the fixed-effect limit, where a subgroup mean is
the inverse-variance weighted mean of its studies); and true moderator effects of the
simulated default dataset (truth.json) against the 95% intervals.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.config import DEFAULT_DATASET
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import Moderator, load_dataset
from analysis.fitting.meta_regression import fit_meta_regression, fit_subgroups_one_at_a_time
from analysis.fitting.sampling import SamplerSettings
from models.exact.posterior import exact_posterior
from models.meta_regression import (
    DEFAULT_SLOPE_SD_JOINT,
    DEFAULT_SLOPE_SD_SEPARATE,
    ModeratorNotEstimable,
    build_design,
    build_meta_regression_model,
    slope_prior_sds,
)
from models.priors import PriorSet, PriorSpec
from tests.helpers import write_dataset
from tests.tolerances import CLOSED_FORM_LIMIT_ABS, EXACT_TAU_ABS

SPECIES = Moderator("species", "categorical", reference="rat", levels=("mouse", "rat", "rabbit"))
DOSE = Moderator("dose", "numeric")


def _table(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"study": [f"S{i}" for i in range(n)], **columns})


# --- design coding -----------------------------------------------------------------------------


def test_treatment_coding_against_declared_reference_and_dropped_level() -> None:
    studies = _table(species=["rat", "mouse", "rat", "mouse", "mouse"], dose=[1.0, 2.0, 3.0, 4.0, 5.0])
    design = build_design(studies, [SPECIES, DOSE])
    assert design.coef_names == ("intercept", "species[mouse]", "dose")
    np.testing.assert_array_equal(design.X[:, 0], 1.0)
    np.testing.assert_array_equal(design.X[:, 1], [0, 1, 0, 1, 1])
    term = design.term("species")
    assert term.reference == "rat" and term.levels == ("rat", "mouse")
    assert term.dropped_levels == ("rabbit",) and term.counts == {"rat": 2, "mouse": 3, "rabbit": 0}
    assert any("'rabbit' has no study" in note for note in design.notes)


def test_numeric_moderator_centred_at_mean_of_analysed_studies() -> None:
    studies = _table(species=["rat", "mouse", "rat", "mouse"], dose=[1.0, 2.0, 4.0, 9.0])
    design = build_design(studies, [DOSE])
    term = design.term("dose")
    assert term.centre == term.mean == 4.0 and term.sd == pytest.approx(np.std([1, 2, 4, 9], ddof=1))
    np.testing.assert_allclose(design.X[:, 1], [-3.0, -2.0, 0.0, 5.0])
    raw = build_design(studies, [DOSE], center=False)
    assert raw.term("dose").centre == 0.0
    np.testing.assert_allclose(raw.X[:, 1], [1.0, 2.0, 4.0, 9.0])
    np.testing.assert_allclose(raw.baseline(), [1.0, 4.0])  # subgroup baseline: numeric at its mean


def test_constant_moderator_raises_or_is_skipped_with_a_note() -> None:
    studies = _table(species=["rat", "rat", "rat"], dose=[2.0, 2.0, 3.0])
    with pytest.raises(
        ModeratorNotEstimable, match="'species' cannot be estimated: all analysed studies have level 'rat'"
    ):
        build_design(studies, [SPECIES, DOSE])
    design = build_design(studies, [SPECIES, DOSE], skip_constant=True)
    assert design.coef_names == ("intercept", "dose")
    assert any(note.startswith("species skipped") for note in design.notes)
    with pytest.raises(ValueError, match="constant"):
        build_design(_table(dose=[2.0, 2.0]), [DOSE])


def test_absent_reference_and_single_study_level_are_noted() -> None:
    studies = _table(species=["mouse", "mouse", "rabbit"])
    design = build_design(studies, [SPECIES])
    assert design.term("species").reference == "mouse" and design.coef_names == ("intercept", "species[rabbit]")
    assert any("reference 'rat' has no study; reference set to 'mouse'" in n for n in design.notes)
    assert any("'rabbit' has a single study (S2)" in n for n in design.notes)


def test_slash_in_a_level_gives_a_path_safe_coefficient_name() -> None:
    route = Moderator("route", "categorical", reference="oral", levels=("oral", "i.v./i.p."))
    design = build_design(_table(route=["oral", "i.v./i.p.", "oral"]), [route])
    assert design.coef_names == ("intercept", "route[i.v._i.p.]")
    np.testing.assert_array_equal(design.level_row("route", "i.v./i.p."), [1.0, 1.0])


def test_rank_and_saturation_notes() -> None:
    studies = _table(species=["rat", "mouse", "rat"], dose=[0.0, 1.0, 0.0])  # dose = species indicator
    notes = build_design(studies, [SPECIES, DOSE]).notes
    assert any("rank-deficient" in n for n in notes) and any("3 coefficients for 3 studies" in n for n in notes)


def test_slope_prior_sds_standardised_and_per_unit() -> None:
    studies = _table(species=["rat", "mouse", "rat", "mouse"], dose=[1.0, 2.0, 4.0, 9.0])
    design = build_design(studies, [SPECIES, DOSE])
    sd_x = np.std([1, 2, 4, 9], ddof=1)
    sds = slope_prior_sds(design, 0.5)
    assert sds["species[mouse]"] == 0.5 and sds["dose"] == float(f"{0.5 / (2 * sd_x):.4g}")
    assert slope_prior_sds(design, 10.0, per="unit") == {"species[mouse]": 10.0, "dose": 10.0}
    with pytest.raises(ValueError, match="positive"):
        slope_prior_sds(design, 0.0)
    assert (DEFAULT_SLOPE_SD_SEPARATE, DEFAULT_SLOPE_SD_JOINT) == (1.0, 0.5)


def test_nuts_graph_reuses_random_effects_builder_with_finite_logp() -> None:
    studies = _table(species=["rat", "mouse", "rat", "mouse"], dose=[1.0, 2.0, 4.0, 9.0])
    design = build_design(studies, [SPECIES, DOSE])
    model = build_meta_regression_model(
        np.array([0.2, 1.0, 0.4, 1.3]),
        np.full(4, 0.05),
        design,
        tau_prior=PriorSpec.parse("halfnormal:1"),
        intercept_prior=PriorSpec.parse("normal:0:3"),
        slope_sds=slope_prior_sds(design, 1.0),
    )
    names = {rv.name for rv in model.free_RVs}
    assert names == {"beta_intercept", "beta_species[mouse]", "beta_dose", "tau"}
    assert list(model.coords["coef"]) == list(design.coef_names)
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


# --- a tiny dataset with known answers ------------------------------------------------------------

TOML = """name = "tiny_mr"
title = "Tiny meta-regression fixture"
provenance = "simulated"
citation = "test fixture"
effect_measure = "SMD"

[outcomes.BMD]
label = "Bone mineral density"
unit = "g/cm2"
direction = 1

[outcomes.Tb_Sp]
label = "Trabecular separation"
unit = "um"
direction = -1

[moderators.species]
type = "categorical"
reference = "rat"
levels = ["rat", "mouse", "rabbit"]

[moderators.batch]
type = "categorical"
reference = "a"
levels = ["a", "b"]

[moderators.strain]
type = "categorical"
reference = "wistar"

[moderators.dose]
type = "numeric"
"""
STUDIES = """study,species,batch,strain,dose
R1,rat,a,wistar,1
R2,rat,a,wistar,2
R3,rat,b,wistar,3
M1,mouse,b,wistar,1
M2,mouse,b,wistar,2
M3,mouse,a,wistar,4
"""
YI = {"R1": 0.20, "R2": 0.45, "R3": 0.30, "M1": 1.10, "M2": 0.85, "M3": 1.30}
VI = {"R1": 0.02, "R2": 0.04, "R3": 0.03, "M1": 0.05, "M2": 0.02, "M3": 0.04}
NEAR_FLAT = PriorSet(mu=PriorSpec.parse("normal:0:1000"), tau=PriorSpec.parse("halfnormal:0.0001"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    rows = [f"{s},{o},{YI[s] * (1 if o == 'BMD' else -1)},{VI[s]}" for o in ("BMD", "Tb_Sp") for s in YI]
    path = write_dataset(
        tmp_path_factory.mktemp("mr"),
        toml=TOML,
        studies=STUDIES,
        arms=None,
        effects="study,outcome,yi,vi\n" + "\n".join(rows) + "\n",
    )
    return load_dataset(path)


def _iv_mean(studies: list[str]) -> tuple[float, float]:
    w = np.array([1 / VI[s] for s in studies])
    return float(w @ np.array([YI[s] for s in studies]) / w.sum()), float(1 / math.sqrt(w.sum()))


def _fixed_effect(tiny, outcome: str, moderators: list[str]):
    return fit_meta_regression(
        tiny,
        outcome,
        moderators=moderators,
        engine="exact",
        priors=NEAR_FLAT,
        beta_prior_sd=1000.0,
        slope_prior_scale="unit",
    )


def test_subgroup_means_and_contrast_are_inverse_variance_means_in_the_fixed_effect_limit(tiny) -> None:
    result = _fixed_effect(tiny, "BMD", ["species"])
    (rat_m, rat_se), (mouse_m, mouse_se) = _iv_mean(["R1", "R2", "R3"]), _iv_mean(["M1", "M2", "M3"])
    groups = {s["level"]: s for s in result.subgroups}
    assert list(groups) == ["rat", "mouse"] and groups["rat"]["is_reference"] and groups["mouse"]["n_studies"] == 3
    for level, (m, se) in {"rat": (rat_m, rat_se), "mouse": (mouse_m, mouse_se)}.items():
        assert abs(groups[level]["mean"] - m) <= CLOSED_FORM_LIMIT_ABS
        assert abs(groups[level]["sd"] - se) <= CLOSED_FORM_LIMIT_ABS
        assert abs(groups[level]["q025"] - (m - 1.959964 * se)) <= CLOSED_FORM_LIMIT_ABS
    (contrast,) = result.contrasts
    diff, se = mouse_m - rat_m, math.hypot(rat_se, mouse_se)
    assert contrast["coef"] == "species[mouse]" and contrast["reference"] == "rat"
    assert abs(contrast["mean"] - diff) <= CLOSED_FORM_LIMIT_ABS and abs(contrast["sd"] - se) <= CLOSED_FORM_LIMIT_ABS
    assert abs(contrast["prob_gt_0"] - stats.norm.cdf(diff / se)) <= CLOSED_FORM_LIMIT_ABS
    assert contrast["prob_benefit"] == contrast["prob_gt_0"]  # higher BMD is better
    assert any("'rabbit' has no study" in n for n in result.notes)


def test_numeric_slope_is_weighted_least_squares_in_the_fixed_effect_limit(tiny) -> None:
    result = _fixed_effect(tiny, "BMD", ["dose"])
    x = np.array([1, 2, 3, 1, 2, 4], dtype=float)
    y, w = np.array(list(YI.values())), 1 / np.array(list(VI.values()))
    X = np.column_stack([np.ones(6), x - x.mean()])
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    coef = cov @ X.T @ (w * y)
    (slope,) = result.slopes
    assert (
        abs(slope["mean"] - coef[1]) <= CLOSED_FORM_LIMIT_ABS
        and abs(slope["sd"] - math.sqrt(cov[1, 1])) <= CLOSED_FORM_LIMIT_ABS
    )
    assert abs(result.beta["intercept"]["mean"] - coef[0]) <= CLOSED_FORM_LIMIT_ABS
    assert slope["centre"] == pytest.approx(x.mean()) and result.subgroups == [] and result.contrasts == []


def test_prob_benefit_follows_the_outcome_direction(tiny) -> None:
    bmd, tbsp = _fixed_effect(tiny, "BMD", ["species"]), _fixed_effect(tiny, "Tb_Sp", ["species"])
    up, down = bmd.contrasts[0], tbsp.contrasts[0]
    assert down["mean"] == pytest.approx(-up["mean"], abs=CLOSED_FORM_LIMIT_ABS)
    assert down["prob_benefit"] == pytest.approx(1.0 - down["prob_gt_0"], abs=1e-12)
    assert down["prob_benefit"] == pytest.approx(up["prob_benefit"], abs=CLOSED_FORM_LIMIT_ABS)
    assert tbsp.prob_benefit == pytest.approx(1.0 - tbsp.beta["intercept"]["prob_gt_0"], abs=1e-12)
    assert tbsp.prob_benefit == pytest.approx(bmd.prob_benefit, abs=CLOSED_FORM_LIMIT_ABS)


def test_former_point_r2_is_kept_in_json_as_one_minus_ratio_of_medians(tiny) -> None:
    """The former point pseudo-R² (JSON only; the report shows the R² posterior, tests/test_meta_regression_r2.py)."""
    priors = PriorSet()
    y, v = np.array(list(YI.values())), np.array(list(VI.values()))
    plain = exact_posterior(y, v, tau_prior=priors.tau, mu_prior=priors.mu)
    tau2_re = plain.summary("tau")["median"] ** 2
    species = fit_meta_regression(tiny, "BMD", moderators=["species"], engine="exact")
    X = np.column_stack([np.ones(6), [0, 0, 0, 1, 1, 1]])
    mr = exact_posterior(y, v, tau_prior=priors.tau, X=X, beta_mean=[0.0, 0.0], beta_cov=np.diag([9.0, 1.0]))
    tau2_mr = mr.summary("tau")["median"] ** 2
    point = species.R2["point_ratio_of_medians"]
    assert abs(point["tau2_median_RE"] - tau2_re) <= EXACT_TAU_ABS
    assert abs(point["tau2_median_MR"] - tau2_mr) <= EXACT_TAU_ABS
    assert point["value"] == pytest.approx(1.0 - point["tau2_median_MR"] / point["tau2_median_RE"])
    assert point["value"] > 0.5 and species.R2["median"] > 0.5  # species separates rats from mice
    batch = fit_meta_regression(tiny, "BMD", moderators=["batch"], engine="exact").R2  # explains nothing
    assert batch["point_ratio_of_medians"]["ratio"] > 1.0 and batch["point_ratio_of_medians"]["value"] == 0.0
    assert 0.0 <= batch["q025"] <= batch["median"] < species.R2["median"]


def test_constant_moderator_in_fits(tiny) -> None:
    with pytest.raises(ValueError, match="'strain' cannot be estimated"):
        fit_meta_regression(tiny, "BMD", moderators=["strain"], engine="exact")
    joint = fit_meta_regression(tiny, "BMD", moderators="all", engine="exact")
    assert joint.moderators == ["species", "batch", "dose"]
    assert any(n.startswith("strain skipped") for n in joint.notes)
    assert joint.slope_prior == {"sd": DEFAULT_SLOPE_SD_JOINT, "per": "standardised", "default": True}
    separate = fit_subgroups_one_at_a_time(tiny, "BMD", engine="exact")
    assert list(separate) == ["species", "batch", "dose"]
    assert separate.skipped == {"strain": "all analysed studies have level 'wistar'"}
    assert separate["species"].slope_prior["sd"] == DEFAULT_SLOPE_SD_SEPARATE
    assert json.loads(json.dumps(separate.to_dict()))["skipped"] == separate.skipped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"moderators": ["nope"]}, "unknown or no moderators"),
        ({"moderators": []}, "unknown or no moderators"),
        ({"moderators": "species"}, "list of names or 'all'"),
        ({"moderators": ["species"], "engine": "gibbs"}, "engine must be"),
        ({"moderators": ["species"], "beta_prior_sd": -1.0}, "positive"),
    ],
)
def test_configuration_is_validated(tiny, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_meta_regression(tiny, "BMD", **{"engine": "exact", **kwargs})


def test_json_layout_and_report_text(tiny) -> None:
    result = fit_meta_regression(tiny, "Tb_Sp", moderators=["species", "dose"], engine="exact")
    out = json.loads(json.dumps(result.to_dict()))
    for key in (
        "dataset",
        "outcome",
        "model",
        "engine",
        "priors",
        "k",
        "mu",
        "tau",
        "theta_new",
        "I2",
        "beta",
        "subgroups",
        "contrasts",
        "slopes",
        "R2",
        "studies",
        "prob_benefit",
        "coding",
        "notes",
    ):
        assert key in out, key
    assert out["model"] == "meta-regression" and out["k"] == 6 and out["direction"] == -1
    assert out["priors"] == {
        "intercept": "normal:0:3",
        "tau": "halfnormal:1",
        "species[mouse]": "normal:0:0.5",
        "dose": f"normal:0:{float(f'{0.5 / (2 * np.std([1, 2, 3, 1, 2, 4], ddof=1)):.4g}'):g}",
    }
    assert set(out["beta"]["dose"]) == {"mean", "sd", "median", "q025", "q975", "prob_gt_0"}
    assert out["mu"] == {k: v for k, v in out["beta"]["intercept"].items() if k != "prob_gt_0"}
    text = str(result)
    for fragment in (
        "meta-regression",
        "[SIMULATED DATA]",
        "k = 6",
        "species (categorical, reference 'rat')",
        "Subgroup means",
        "Contrasts vs reference",
        "Numeric slopes",
        "Bayesian R2",
        "caution: k = 6 < 10 studies",
        "eti95",
        "lower is better",
    ):
        assert fragment in text, fragment


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_nuts_path_runs_and_records_diagnostics(tiny) -> None:
    """A short NUTS run exercises the sampling path (accuracy is the slow tests' business)."""
    result = fit_meta_regression(
        tiny,
        "BMD",
        moderators=["species"],
        engine="nuts",
        seed=3,
        sampler=SamplerSettings(draws=300, tune=300, chains=2),
    )
    post = result.posterior.posterior
    assert post["beta"].sizes["coef"] == 2 and post["theta"].sizes["study"] == 6 and "theta_new" in post
    assert result.diagnostics is not None and result.settings["seed"] == 3
    out = json.loads(json.dumps(result.to_dict()))
    assert out["engine"] == "nuts" and set(out["diagnostics"]) >= {"r_hat_max", "ess_bulk_min", "divergences"}
    again = fit_meta_regression(
        tiny,
        "BMD",
        moderators=["species"],
        engine="nuts",
        seed=3,
        sampler=SamplerSettings(draws=300, tune=300, chains=2),
    )
    assert again.beta == result.beta and again.subgroups == result.subgroups
    assert result.R2["n_draws"] == post.sizes["chain"] * post.sizes["draw"] and again.R2 == result.R2  # all draws


# --- the simulated default dataset: true moderator effects ----------------------------------------


@pytest.fixture(scope="module")
def flagship():
    dataset = load_dataset(DEFAULT_DATASET)
    return dataset, compute_effects(dataset), json.loads((DEFAULT_DATASET / "truth.json").read_text())


@pytest.mark.parametrize("outcome", ["BV_TV", "BMD"])  # the outcomes with most studies (k = 10, 9)
def test_true_moderator_effects_inside_joint_model_intervals(flagship, outcome: str) -> None:
    """Joint model: slopes and contrasts estimate the truth's partial effects (natural scale)."""
    dataset, table, truth = flagship
    result = fit_meta_regression(dataset, outcome, moderators="all", engine="exact", table=table)
    true_beta = truth["moderators_by_outcome"][outcome]  # natural scale = direction x benefit-scale effect
    assert set(true_beta) == set(result.design.coef_names[1:])
    for coef, value in true_beta.items():
        assert result.beta[coef]["q025"] <= value <= result.beta[coef]["q975"], (coef, value, result.beta[coef])
    engineered = next(c for c in result.contrasts if c["moderator"] == "engineered")
    assert engineered["level"] == "engineered" and engineered["reference"] == "native"
    assert engineered["q025"] <= truth["direction"][outcome] * 0.5 <= engineered["q975"]
    # intercept: mu_k + d_k * c(x) at the reference levels and the analysed studies' numeric means
    c0 = sum(
        -m["effect"][lvl] * m["population_share"][lvl]
        for m in truth["moderators"].values()
        if m["type"] == "categorical"
        for lvl in m["effect"]
    )
    c0 += sum(
        m["per_unit"] * (result.design.term(name).mean - m["centre"])
        for name, m in truth["moderators"].items()
        if m["type"] == "numeric"
    )
    intercept = truth["mu"][outcome] + truth["direction"][outcome] * c0
    assert result.beta["intercept"]["q025"] <= intercept <= result.beta["intercept"]["q975"]


@pytest.mark.parametrize("outcome", ["BV_TV", "BMD"])
def test_one_at_a_time_contrasts_cover_their_pseudo_true_values(flagship, outcome: str) -> None:
    """One moderator at a time estimates the projection of the true effects on that moderator.

    The moderators are correlated in the design, so a single-moderator contrast targets the
    generalised-least-squares projection of the true ``mu_k + d_k c_i`` (truth.json
    ``moderator_contributions``) on ``[1, x]``, weights ``1 / (v_i + tau_res^2)``, not the
    partial effect.
    """
    dataset, table, truth = flagship
    d = truth["direction"][outcome]
    for name, result in fit_subgroups_one_at_a_time(dataset, outcome, engine="exact", table=table).items():
        X, v = result.design.X, result.studies["vi"].to_numpy()
        target = truth["mu"][outcome] + d * np.array([truth["moderator_contributions"][s] for s in result.design.study])
        w = 1.0 / (v + truth["tau_residual"][outcome] ** 2)
        projection = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * target))
        coef = result.beta[result.design.coef_names[1]]
        assert coef["q025"] <= projection[1] <= coef["q975"], (name, projection[1], coef)
