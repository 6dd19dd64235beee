"""Certainty rating (:mod:`analysis.inference.certainty`): each GRADE-style rule fires when, and only when, due."""

from __future__ import annotations

import dataclasses

import pytest

from analysis.inference.certainty import CERTAINTY_LEVELS, Evidence, rate

CLEAN = Evidence(
    k=12,
    mu_interval=(1.0, 2.0),
    theta_new_interval=(0.2, 2.8),
    min_effect=0.5,
    n_low_risk=8,
    asymmetry_p=0.4,
    asymmetry_flagged=False,
)


def _domains(evidence: Evidence) -> list[str]:
    return [domain for domain, _ in rate(evidence).downgrades]


def test_clean_evidence_is_high_certainty():
    c = rate(CLEAN)
    assert c.level == "high" and c.downgrades == ()


@pytest.mark.parametrize(
    ("change", "domain"),
    [
        ({"n_low_risk": 5}, "risk of bias"),
        ({"mu_interval": (0.3, 2.0)}, "imprecision"),
        ({"theta_new_interval": (-0.1, 2.8)}, "inconsistency"),
        ({"asymmetry_p": 0.01, "asymmetry_flagged": True}, "publication bias"),
    ],
)
def test_each_rule_downgrades_one_level(change, domain):
    evidence = dataclasses.replace(CLEAN, **change)
    assert _domains(evidence) == [domain]
    assert rate(evidence).level == "moderate"


def test_boundaries():
    assert _domains(dataclasses.replace(CLEAN, n_low_risk=6)) == []  # exactly half: not serious
    assert _domains(dataclasses.replace(CLEAN, mu_interval=(0.6, 2.0))) == []  # all above delta
    assert _domains(dataclasses.replace(CLEAN, mu_interval=(0.1, 0.4))) == []  # precisely irrelevant
    no_delta = dataclasses.replace(CLEAN, min_effect=None, mu_interval=(-0.1, 1.0))
    assert _domains(no_delta) == ["imprecision"] and "no effect" in rate(no_delta).downgrades[0][1]


def test_downgrades_accumulate_to_very_low():
    evidence = Evidence(
        k=5,
        mu_interval=(0.2, 2.0),
        theta_new_interval=(-1.0, 3.0),
        min_effect=0.5,
        n_low_risk=0,
        asymmetry_p=0.01,
        asymmetry_flagged=True,
    )
    c = rate(evidence)
    assert len(c.downgrades) == 4 and c.level == CERTAINTY_LEVELS[-1]
    assert any("too few studies" in n for n in c.notes)


def test_unjudged_risk_of_bias_is_noted_not_downgraded():
    c = rate(dataclasses.replace(CLEAN, n_low_risk=None))
    assert c.level == "high" and any("no SYRCLE" in n for n in c.notes)


def test_publication_bias_without_a_calibrated_check_is_not_rated():
    c = rate(dataclasses.replace(CLEAN, asymmetry_p=None, asymmetry_flagged=False))
    assert c.level == "high" and any("no calibrated funnel-asymmetry check" in n for n in c.notes)


def test_calibrated_reporting_bias_flag_downgrades_publication_bias_once():
    flagged = dataclasses.replace(CLEAN, reporting_bias_z=-2.5)
    c = rate(flagged)
    assert [d for d, _ in c.downgrades] == ["publication bias"] and "z = -2.50" in c.downgrades[0][1]
    both = dataclasses.replace(flagged, asymmetry_p=0.01, asymmetry_flagged=True)
    assert [d for d, _ in rate(both).downgrades] == ["publication bias"]  # one domain, one level
