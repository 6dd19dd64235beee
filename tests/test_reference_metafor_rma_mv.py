"""Multivariate model versus metafor's ``rma.mv`` on berkey1998 (slow: real NUTS).

Source: Berkey CS, Hoaglin DC, Antczak-Bouckoms A, Mosteller F, Colditz GA (1998). Meta-analysis
of multiple outcomes by regression with random effects. Statistics in Medicine 17, 2537-2550;
data ``dat.berkey1998`` (R package metadat). Reference numbers from
``../shared/reference/make_reference.R`` (R 4.2.2, metafor 3.8-1)::

    V <- bldiag(lapply(split(d[,c("v1i","v2i")], d$trial), as.matrix))
    rma.mv(yi, V, mods = ~ outcome - 1, random = ~ outcome | trial, struct = "UN", method = "REML")

Five periodontal trials, two outcomes (AL: attachment level, PD: probing depth, in mm) with the
full within-trial covariance known. The Bayesian fit uses those covariances as given.

Priors (the data are mean differences in mm, not SMDs, so the SMD defaults are rescaled):
mu_k ~ N(0, 1²) - treatment differences in periodontal trials are fractions of a millimetre, and
the prior SD is 11-17 times metafor's SEs (0.06-0.09), so it hardly moves mu; tau_k ~
HalfNormal(0.5) - median 0.34 mm, 95% below 0.98 mm, weakly informative around REML's tau of
0.11-0.18 mm; R ~ LKJ(2) (the default; marginal Beta(2, 2) on (r + 1) / 2).

Tolerances (``tests/tolerances.py``): REML gives point estimates (a restricted-likelihood mode),
the posterior averages over (tau, R) with k = 5, so the comparison is loose and stated per kind:
mu within ``MV_MU_VS_REML_SE_FRACTION`` of metafor's SE; tau² posterior median within a factor
``MV_TAU2_MEDIAN_VS_REML_FACTOR`` of REML and REML inside the posterior's central 50% interval;
REML rho inside the 95% ETI of the correlation.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from analysis.fitting.multivariate import fit_multivariate_data
from analysis.fitting.multivariate_data import multivariate_data_from_effects
from models.priors import PriorSet, PriorSpec
from tests.tolerances import (
    GATE_DIVERGENCES_MAX,
    GATE_ESS_BULK_MIN,
    GATE_R_HAT_MAX,
    MV_MU_VS_REML_SE_FRACTION,
    MV_TAU2_MEDIAN_VS_REML_FACTOR,
)

pytestmark = pytest.mark.slow

BERKEY_CSV = """trial,author,year,ni,outcome,yi,vi,v1i,v2i
1,Pihlstrom et al.,1983,14,PD,0.47,0.0075,0.0075,0.003
1,Pihlstrom et al.,1983,14,AL,-0.32,0.0077,0.003,0.0077
2,Lindhe et al.,1982,15,PD,0.2,0.0057,0.0057,0.0009
2,Lindhe et al.,1982,15,AL,-0.6,0.0008,0.0009,0.0008
3,Knowles et al.,1979,78,PD,0.4,0.0021,0.0021,0.0007
3,Knowles et al.,1979,78,AL,-0.12,0.0014,0.0007,0.0014
4,Ramfjord et al.,1987,89,PD,0.26,0.0029,0.0029,0.0009
4,Ramfjord et al.,1987,89,AL,-0.31,0.0015,0.0009,0.0015
5,Becker et al.,1988,16,PD,0.56,0.0148,0.0148,0.0072
5,Becker et al.,1988,16,AL,-0.39,0.0304,0.0072,0.0304
"""

# metafor rma.mv(struct = "UN", method = "REML"), coefficients in factor order (AL, PD).
REML_COEF = {"AL": -0.339215225590293, "PD": 0.353428351777051}
REML_SE = {"AL": 0.0879052686790708, "PD": 0.0588488447197095}
REML_TAU2 = {"AL": 0.0326514436906204, "PD": 0.0117331439423139}
REML_RHO = 0.608796250431759

PRIORS = PriorSet(mu=PriorSpec.parse("normal:0:1"), tau=PriorSpec.parse("halfnormal:0.5"), lkj_eta=2.0)


@pytest.fixture(scope="module")
def fit():
    data = multivariate_data_from_effects(
        pd.read_csv(io.StringIO(BERKEY_CSV)), cov_columns=("v1i", "v2i"), dataset="berkey1998", measure="MD (mm)"
    )
    assert data.outcome_ids == ["AL", "PD"]
    return fit_multivariate_data(data, priors=PRIORS, seed=1998)


def test_converges(fit):
    d = fit.diagnostics
    assert (
        d.divergences <= GATE_DIVERGENCES_MAX and d.r_hat_max <= GATE_R_HAT_MAX and d.ess_bulk_min >= GATE_ESS_BULK_MIN
    ), d


@pytest.mark.parametrize("outcome", ["AL", "PD"])
def test_mu_near_reml(fit, outcome):
    gap = abs(fit.mu.loc[outcome, "mean"] - REML_COEF[outcome])
    assert gap <= MV_MU_VS_REML_SE_FRACTION * REML_SE[outcome], (outcome, gap / REML_SE[outcome])


@pytest.mark.parametrize("outcome", ["AL", "PD"])
def test_tau2_near_reml(fit, outcome):
    tau2 = fit.posterior.posterior["tau"].sel(outcome=outcome).to_numpy().ravel() ** 2
    q25, median, q75 = np.quantile(tau2, [0.25, 0.5, 0.75])
    ratio = median / REML_TAU2[outcome]
    assert 1.0 / MV_TAU2_MEDIAN_VS_REML_FACTOR <= ratio <= MV_TAU2_MEDIAN_VS_REML_FACTOR, (outcome, ratio)
    assert q25 <= REML_TAU2[outcome] <= q75, (outcome, q25, REML_TAU2[outcome], q75)


def test_rho_reml_inside_eti95(fit):
    row = fit.rho.loc["AL~PD"]
    assert row["q025"] <= REML_RHO <= row["q975"], row.to_dict()
