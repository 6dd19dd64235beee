"""Prior strings (models/priors.py): parsing, canonical form, densities and PyMC translation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from models.priors import DEFAULT_MU_PRIOR, DEFAULT_TAU_PRIOR, PriorSpec
from tests.tolerances import EFFECT_SIZE_ABS

# Closed-form log densities are compared at EFFECT_SIZE_ABS ("deterministic closed forms"):
# PyMC 6.4 evaluates log(2) in float32 inside HalfCauchy/HalfStudentT.logp, ~2e-8 off.
LOGPDF_ABS = EFFECT_SIZE_ABS

POINTS = np.array([0.05, 0.3, 0.7, 1.5, 4.0])

SCIPY = {
    "halfnormal:0.5": lambda x: stats.halfnorm.logpdf(x, scale=0.5),
    "halfcauchy:0.5": lambda x: stats.halfcauchy.logpdf(x, scale=0.5),
    "halfstudentt:3:0.5": lambda x: math.log(2.0) + stats.t.logpdf(x, 3.0, scale=0.5),
    "lognormal:-1:0.7": lambda x: stats.lognorm.logpdf(x, s=0.7, scale=math.exp(-1.0)),
    "uniform:0.1:2": lambda x: stats.uniform.logpdf(x, loc=0.1, scale=1.9),
    "normal:0.3:3": lambda x: stats.norm.logpdf(x, loc=0.3, scale=3.0),
}


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("halfnormal:1", "halfnormal:1"),
        ("halfnormal:1.0", "halfnormal:1"),
        (" HalfCauchy : 0.5 ", "halfcauchy:0.5"),
        ("halfstudentt:3:0.25", "halfstudentt:3:0.25"),
        ("lognormal:-1.5:0.7", "lognormal:-1.5:0.7"),
        ("uniform:0:2", "uniform:0:2"),
        ("normal:0:3", "normal:0:3"),
        ("normal:1e-7:0.1", "normal:1e-07:0.1"),
        ("normal:0.1:3.3333333333333335", "normal:0.1:3.3333333333333335"),
    ],
)
def test_parse_str_round_trip(text: str, canonical: str) -> None:
    spec = PriorSpec.parse(text)
    assert str(spec) == canonical
    again = PriorSpec.parse(str(spec))
    assert again == spec
    assert again.params == spec.params  # exact, not approximate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo:1", "unknown family"),
        ("", "empty"),
        ("halfnormal", "takes 1 parameter"),
        ("halfnormal:1:2", "takes 1 parameter"),
        ("halfstudentt:3", "takes 2 parameter"),
        ("halfnormal:", "not a number"),
        ("normal:a:1", "not a number"),
        ("halfnormal:nan", "not finite"),
        ("halfnormal:inf", "not finite"),
        ("halfnormal:0", "must be > 0"),
        ("halfcauchy:-1", "must be > 0"),
        ("halfstudentt:0:1", "NU must be > 0"),
        ("lognormal:0:0", "must be > 0"),
        ("normal:0:-3", "must be > 0"),
        ("uniform:2:1", "A < B"),
        ("uniform:1:1", "A < B"),
    ],
)
def test_parse_errors_name_string_and_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        PriorSpec.parse(text)
    assert repr(text) in str(info.value)
    assert "halfnormal:S" in str(info.value) and "uniform:A:B" in str(info.value)


def test_constructor_validates_too() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        PriorSpec("halfnormal", (-1.0,))
    assert PriorSpec("HalfNormal", (1,)) == PriorSpec.parse("halfnormal:1")


@pytest.mark.parametrize("text", list(SCIPY))
def test_logpdf_matches_scipy(text: str) -> None:
    spec = PriorSpec.parse(text)
    np.testing.assert_allclose(spec.logpdf(POINTS), SCIPY[text](POINTS), rtol=0, atol=LOGPDF_ABS)
    assert spec.logpdf(POINTS).shape == POINTS.shape


@pytest.mark.parametrize("text", ["halfnormal:0.5", "halfcauchy:0.5", "halfstudentt:3:0.5", "lognormal:0:1"])
def test_positive_families_have_no_mass_below_zero(text: str) -> None:
    spec = PriorSpec.parse(text)
    assert spec.is_positive
    assert spec.support == (0.0, math.inf)
    assert np.all(spec.logpdf(np.array([-1.0, -1e-9])) == -np.inf)


def test_is_positive_and_require_positive() -> None:
    assert PriorSpec.parse("uniform:0:2").is_positive
    assert not PriorSpec.parse("uniform:-1:2").is_positive
    assert not PriorSpec.parse("normal:0:1").is_positive
    assert PriorSpec.parse("uniform:0.5:2").support == (0.5, 2.0)
    assert PriorSpec.parse("halfnormal:1").require_positive() == PriorSpec.parse("halfnormal:1")
    for text in ("normal:0:1", "uniform:-1:2"):
        with pytest.raises(ValueError, match="must live on"):
            PriorSpec.parse(text).require_positive("tau")


def test_defaults() -> None:
    assert str(DEFAULT_MU_PRIOR) == "normal:0:3"
    assert str(DEFAULT_TAU_PRIOR) == "halfnormal:1"
    assert DEFAULT_TAU_PRIOR.is_positive and not DEFAULT_MU_PRIOR.is_positive


OPS = {
    "halfnormal:0.5": "halfnormal",
    "halfcauchy:0.5": "halfcauchy",
    "halfstudentt:3:0.5": "halfstudentt",
    "lognormal:-1:0.7": "lognormal",
    "uniform:0.1:2": "uniform",
    "normal:0.3:3": "normal",
}


@pytest.mark.parametrize("text", list(OPS))
def test_to_pymc_builds_matching_distribution(text: str) -> None:
    pm = pytest.importorskip("pymc")
    spec = PriorSpec.parse(text)
    with pm.Model(coords={"study": ["a", "b", "c", "d", "e"]}) as model:
        rv = spec.to_pymc("x", dims="study")
    assert rv.owner.op.name == OPS[text]
    assert rv.dtype == "float64"
    assert model.named_vars_to_dims["x"] == ("study",)
    np.testing.assert_allclose(pm.logp(rv, POINTS).eval(), SCIPY[text](POINTS), rtol=0, atol=LOGPDF_ABS)
    # the model's own log density (no Jacobian) at the transformed value agrees as well
    inside = POINTS[np.isfinite(SCIPY[text](POINTS))]
    with pm.Model() as scalar_model:
        rv = spec.to_pymc("x")
    value_var = scalar_model.rvs_to_values[rv]
    transform = scalar_model.rvs_to_transforms[rv]
    logp = scalar_model.compile_logp(jacobian=False)
    for x in inside:
        value = x if transform is None else transform.forward(x, *rv.owner.inputs).eval()
        assert abs(logp({value_var.name: value}) - SCIPY[text](x)) <= LOGPDF_ABS


def test_to_pymc_scalar_without_dims() -> None:
    pm = pytest.importorskip("pymc")
    with pm.Model() as model:
        PriorSpec.parse("halfnormal:1").to_pymc("tau")
    assert model["tau"].eval().shape == ()
