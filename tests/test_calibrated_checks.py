"""Calibrated checks (:mod:`analysis.checks.calibrated`): sampled posterior p-values and the ``checks`` list.

The sampled posterior p-value (Johnson 2004; Gosselin 2011) is exactly uniform when the data come
from the model's prior predictive; the averaged posterior predictive p-value is not (Bayarri &
Berger 2000). Both are shown on a conjugate normal model whose posterior is known in closed form,
then the check list of a real (tiny) arm-level fit is checked field by field.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from analysis.checks import calibrated
from analysis.checks.calibrated import FALSE_ALARM_RATES, calibration_status, check_fit, checks_of
from analysis.checks.predictive import sampled_p_values
from analysis.config import REPORTS_DIR
from analysis.results.checks import NOMINAL_LEVEL, Check
from tests.helpers import tiny_arm_fit

N_DATASETS = 2000
N_OBS = 5
N_REP = 400
#: KS test level at which a p-value distribution is rejected as non-uniform.
KS_LEVEL = 0.001


def _conjugate_p_values(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sampled and averaged p of T = max|y - theta| in y_i ~ N(theta, 1), theta ~ N(0, 1), data from the prior."""
    theta = rng.standard_normal(N_DATASETS)
    y = theta[:, None] + rng.standard_normal((N_DATASETS, N_OBS))
    post_mean, post_sd = y.sum(axis=1) / (N_OBS + 1), np.sqrt(1.0 / (N_OBS + 1))
    draws = post_mean[:, None] + post_sd * rng.standard_normal((N_DATASETS, N_REP))  # one rep per draw
    y_rep = draws[..., None] + rng.standard_normal((N_DATASETS, N_REP, N_OBS))
    t_obs = np.abs(y[:, None, :] - draws[..., None]).max(axis=-1)
    t_rep = np.abs(y_rep - draws[..., None]).max(axis=-1)
    averaged = (t_rep >= t_obs).mean(axis=1)
    sampled = []
    for i in range(N_DATASETS):  # draw 0 is the chosen draw; replicates all from it
        chosen = draws[i, 0]
        rep = chosen + rng.standard_normal((N_REP, N_OBS))
        observed = {"T": float(np.abs(y[i] - chosen).max())}
        sampled.append(sampled_p_values(observed, {"T": np.abs(rep - chosen).max(axis=1)})["T"])
    return np.array(sampled), averaged


def test_sampled_p_value_is_uniform_and_averaged_ppp_is_not():
    sampled, averaged = _conjugate_p_values(np.random.default_rng(20261202))
    assert stats.kstest(sampled, "uniform").pvalue > KS_LEVEL
    assert stats.kstest(averaged, "uniform").pvalue < KS_LEVEL  # the double use of the data
    assert averaged.std() < sampled.std()


def test_sampled_p_values_tails():
    rep = np.arange(1.0, 101.0)  # 1..100
    upper = sampled_p_values({"Q": 91.0}, {"Q": rep})["Q"]
    assert upper == pytest.approx(0.10)
    two = sampled_p_values({"egger_slope": 5.0}, {"egger_slope": rep})["egger_slope"]
    assert two == pytest.approx(2 * 0.05)  # lower tail 5/100, doubled
    assert sampled_p_values({"egger_slope": 50.5}, {"egger_slope": rep})["egger_slope"] == 1.0


def test_check_flags_below_its_level():
    check = Check("Q", 3.0, 0.049, NOMINAL_LEVEL, 0.05, "x", calibrated=True)
    assert check.flagged is True and Check("Q", 3.0, 0.05, NOMINAL_LEVEL, 0.05, "x", calibrated=True).flagged is False
    assert Check("Q", 3.0, 0.001, NOMINAL_LEVEL, None, "not measured").flagged is None  # no calibration, no flag
    assert Check("Q", 3.0, 0.001, NOMINAL_LEVEL, 0.02, "x", calibrated=False).flagged is None  # outside the band
    assert set(check.to_dict()) >= {"name", "statistic", "p_value", "nominal_level", "flagged", "false_alarm_rate"}


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_check_fit_stores_the_checks_of_an_arm_fit():
    dataset, fit = tiny_arm_fit()
    ppc = check_fit(fit, dataset, seed=5)
    assert ppc is not None and fit.checks == checks_of(ppc, "arm", measure="SMD")
    assert set(ppc.sampled) == set(ppc.statistics) == {"Q", "max_std_residual", "egger_slope"}
    assert [c.name for c in fit.checks] == list(ppc.sampled)
    for check in fit.checks:
        assert 0.0 <= check.p_value <= 1.0
        assert check.false_alarm_rate == FALSE_ALARM_RATES[("arm", check.name, check.nominal_level)][0]
        assert check.calibrated == calibration_status("arm", check.name, "SMD")
        assert check.flagged == (check.p_value < check.nominal_level if check.calibrated else None)
    out = json.loads(json.dumps(fit.to_dict()))
    assert [c["name"] for c in out["checks"]] == [c.name for c in fit.checks]
    # the sampled p-value uses one draw: another seed picks another draw
    again = check_fit(fit, dataset, seed=6)
    assert again is not None and again.sampled_draw != ppc.sampled_draw


def test_false_alarm_rates_are_the_committed_calibration_study():
    """FALSE_ALARM_RATES copies reports/calibration.json (scenario null) exactly, for every check it names."""
    study = json.loads((REPORTS_DIR / "calibration.json").read_text(encoding="utf-8"))
    measured = {
        (row["likelihood"], row["statistic"], level): (row[f"rate_{level:g}"], row[f"rate_{level:g}_mcse"])
        for row in study["summary"]
        if row["scenario"] == "null" and not row["statistic"].startswith(("ppp_", "loo_"))
        for level in study["settings"]["nominal_levels"]
    }
    assert FALSE_ALARM_RATES.keys() == measured.keys()
    for key, (rate, mcse) in measured.items():
        assert FALSE_ALARM_RATES[key] == (pytest.approx(rate), pytest.approx(mcse)), key


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_miscalibrated_and_unmeasured_checks_never_flag():
    dataset, fit = tiny_arm_fit()
    ppc = check_fit(fit, dataset, seed=5)
    assert ppc is not None
    normal = {c.name: c for c in checks_of(ppc, "normal", measure="SMD")}
    assert normal["egger_slope"].calibrated is False and normal["egger_slope"].flagged is None  # ~40% false alarms
    assert normal["egger_slope"].false_alarm_rate > 0.3
    other = checks_of(ppc, "normal", measure="ROM")  # calibrated by theory, not measured: no rates, no flags
    assert all(c.calibrated is None and c.flagged is None and c.false_alarm_rate is None for c in other)


def test_calibration_status_is_the_two_mcse_band_at_every_level(monkeypatch):
    table = {
        ("arm", "good", 0.05): (0.045, 0.01),
        ("arm", "good", 0.1): (0.11, 0.012),
        ("arm", "shy", 0.05): (0.02, 0.008),  # 3.75 MCSE below the level: conservative
        ("arm", "shy", 0.1): (0.09, 0.012),
        ("arm", "loud", 0.05): (0.40, 0.02),
    }
    monkeypatch.setattr(calibrated, "FALSE_ALARM_RATES", table)
    assert calibration_status("arm", "good", "SMD") is True
    assert calibration_status("arm", "shy", "SMD") is False
    assert calibration_status("arm", "loud", "SMD") is False
    assert calibration_status("arm", "never_measured", "SMD") is None
    assert calibration_status("arm", "good", "ROM") is None  # measured on SMDs only
