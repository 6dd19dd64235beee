"""One tolerance table per kind of quantity (as metafor's ``tests/testthat/settings.r``).

Every numeric comparison in the test suite takes its tolerance from here, so that a
tolerance is never loosened locally to get a test green.

Kinds
-----
effect_size
    Effect sizes and sampling variances recomputed from arm-level data versus metafor's
    ``escalc`` (deterministic closed forms: agreement to rounding of the reference).
frequentist
    Frequentist estimates (REML, DL, leave-one-out) versus metafor, relative; the reference
    README states 1e-4 relative holds in practice.
exact_mu
    Exact-engine summaries of mu, beta and theta_new versus bayesmeta, absolute. bayesmeta
    approximates the mu mixture (its "DIRECT" algorithm), hence the looser value.
exact_tau
    Exact-engine summaries of tau versus bayesmeta, absolute.
mcse_multiple
    NUTS posterior means must lie within this many Monte Carlo standard errors of the
    exact answer, after passing the convergence gates below.
"""

from __future__ import annotations

EFFECT_SIZE_ABS = 1e-6
FREQUENTIST_REL = 1e-4
EXACT_MU_ABS = 1e-3
EXACT_TAU_ABS = 1e-4
MCSE_MULTIPLE = 4.0

# Convergence gates applied before any NUTS-vs-exact comparison.
GATE_R_HAT_MAX = 1.01
GATE_ESS_BULK_MIN = 400
GATE_DIVERGENCES_MAX = 0

# Bayesian posterior under flat-ish priors versus a frequentist point estimate (REML):
# |posterior median - REML estimate| <= this fraction of metafor's standard error. Under
# uniform(0, 10) on tau and N(0, 100^2) on mu both are weighted means with weights from nearby
# tau values, so they differ at second order; 10% of the SE is far below any inferential gap.
BAYES_VS_REML_SE_FRACTION = 0.1

# Exact engine in a closed-form limit versus the closed form (e.g. near-flat N(0, 1000^2)
# coefficient priors and a HalfNormal(1e-4) tau prior versus inverse-variance weighted means and
# weighted least squares): the limit is approached to O(prior precision / data precision) ~ 1e-8
# and O(tau^2 / v) ~ 1e-6, and the mixture quantiles are solved to ~1e-9 (worst error seen on
# the test fixture: 2.5e-8), so 1e-5 absolute leaves a wide margin while staying far below any
# real discrepancy (a wrong weight or coding moves these numbers by > 1e-2).
CLOSED_FORM_LIMIT_ABS = 1e-5

# PSIS-LOO pointwise elpd versus the exact leave-one-study-out predictive density
# log p(y_i | y_-i) = log p(y) - log p(y_-i) (difference of exact marginal likelihoods), for
# studies with Pareto k <= 0.7 and 4000 draws. PSIS is an importance-sampling estimate: its Monte
# Carlo error with 4000 draws and well-behaved k is ~0.005-0.03 on the log scale (seen: <= 0.03 on
# bcg and the default dataset), so 0.05 flags a wrong log-likelihood (e.g. theta not integrated
# out, which shifts elpd_i by O(1)) without failing on Monte Carlo noise.
PSIS_ELPD_ABS = 0.05

# --- multivariate model (analysis/fitting/multivariate.py, models/multivariate.py) ---------------------
# PyTensor's marginal log density of the observed effects versus scipy.stats.multivariate_normal
# on a hand-built case: both are float64 closed forms of the same density (Cholesky vs scipy's
# eigendecomposition), so they agree to rounding; 1e-8 absolute on a sum of ~4 terms of O(1).
MARGINAL_LOGP_ABS = 1e-8
# berkey1998 (k = 5 trials, 2 outcomes) versus metafor rma.mv(struct="UN", REML):
# |posterior mean of mu_k - REML coef| <= this fraction of metafor's SE. REML's coef is a GLS mean
# at the REML tau, the posterior mean averages GLS means over the posterior of (tau, R); with k = 5
# they differ at second order but not by a sizeable part of the SE (seen: 0.08 and 0.10 SE).
MV_MU_VS_REML_SE_FRACTION = 0.5
# Posterior median of tau_k^2 versus REML tau_k^2: ratio within [1/F, F]. With k = 5 the posterior
# of tau^2 is right-skewed, roughly log-normal with log-SD s ~ 0.8 (95% ETI spans a factor ~25);
# REML is a mode, and for a log-normal mode = median * exp(-s^2), i.e. a factor exp(0.64) ~ 1.9 is
# expected from skewness alone; F = 2.5 adds room for the HalfNormal(0.5) prior on tau. The test
# also requires REML tau^2 inside the posterior's central 50% interval.
MV_TAU2_MEDIAN_VS_REML_FACTOR = 2.5

# Arm-level (exact small-sample) likelihood versus the normal likelihood on Hedges' g, on
# normand1999 (8-183 patients per arm, most > 30): the two likelihoods differ per study by
# O(1/n) (the normal approximation of g and its estimated "LS" variance), i.e. well under 1% of
# vi for the large studies and a few % for Montreal-Home (8 vs 13) and Orpington-Severe (18 vs 18),
# so the posteriors of mu and tau must nearly coincide. The arm-level fit is NUTS with 4 x 1000
# draws: MCSE of the mean of mu ~0.013 and of tau ~0.01 (seen: ESS ~700-1000, posterior SDs 0.35
# and 0.27). 0.05 absolute for mu (~4 MCSE, 0.15 posterior SD) and 10% relative for tau (~0.1,
# ~4 MCSE) leave room for Monte Carlo error plus the genuine O(1/n) difference (seen: 0.015 and
# 1.6%), while a wrong likelihood (e.g. sigma not shared, a missing sqrt(n), theta on the wrong
# scale) moves them by far more.
ARM_VS_NORMAL_LARGE_N_MU_ABS = 0.05
ARM_VS_NORMAL_LARGE_N_TAU_REL = 0.10

# --- three-level model (models/multilevel.py, analysis/fitting/multilevel.py) -----------------------
# Posterior means of tau and omega (flat priors: mu ~ N(0, 100^2), tau, omega ~ Uniform(0, 10))
# versus REML's sqrt(sigma2) on fst_martins2025 (k = 200 studies, 561 comparisons), relative. With a
# flat mu prior the posterior of (tau, omega) is proportional to the restricted likelihood, so REML is
# its joint mode and the means differ from it by skewness, O(s^2) with s = posterior SD / estimate
# (0.077 for tau, 0.066 for omega): s^2 = 0.6% and 0.4%; the exact quadrature posterior gives +0.8%
# and +0.5%. Monte Carlo error of a NUTS mean with ESS >= 400 is <= s / 20 = 0.4% (4 MCSE: 1.6%).
# 3% covers both, while ignoring the Gleser-Olkin covariances of shared controls (V diagonal) moves
# the exact means by +7% (tau) and +7.4% (omega).
MULTILEVEL_SD_VS_REML_REL = 0.03
