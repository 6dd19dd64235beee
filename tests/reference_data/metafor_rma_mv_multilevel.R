# Reference numbers for the three-level model (comparisons nested in studies) from metafor's rma.mv (REML).
# Run from the repository root with R 4.2.2, metafor 3.8-1, jsonlite:
#   Rscript tests/reference_data/metafor_rma_mv_multilevel.R
# Reads the comparison-level effects of data/fst_martins2025, outcome immobility, as evmeta computes them
# (Hedges' g and metafor's "LS" variance; Gleser-Olkin covariances of comparisons sharing a control arm),
# written by `python -m tests.test_reference_metafor_rma_mv_multilevel`:
#   metafor_rma_mv_multilevel_effects.csv  study, comparison, yi, vi, drug_class (one row per comparison)
#   metafor_rma_mv_multilevel_cov.csv      study, comparison_1, comparison_2, cov (off-diagonal covariances)
# Writes tests/reference_data/metafor_rma_mv_multilevel.json (read by tests/test_reference_metafor_rma_mv_multilevel.py).
suppressMessages({library(metafor); library(jsonlite)})
dir <- "tests/reference_data"
d <- read.csv(file.path(dir, "metafor_rma_mv_multilevel_effects.csv"), stringsAsFactors = FALSE,
              colClasses = c(study = "character", comparison = "character"))
cv <- read.csv(file.path(dir, "metafor_rma_mv_multilevel_cov.csv"), stringsAsFactors = FALSE,
               colClasses = c(study = "character", comparison_1 = "character", comparison_2 = "character"))
key <- paste(d$study, d$comparison, sep = "|")
stopifnot(!anyDuplicated(key))
V <- diag(d$vi)
i <- match(paste(cv$study, cv$comparison_1, sep = "|"), key)
j <- match(paste(cv$study, cv$comparison_2, sep = "|"), key)
stopifnot(!anyNA(i), !anyNA(j))
V[cbind(i, j)] <- cv$cov
V[cbind(j, i)] <- cv$cov
d$comparison_id <- key
fit <- rma.mv(yi, V, random = ~ 1 | study / comparison_id, data = d, method = "REML")
# meta-regression on a comparison-level moderator: tricyclic vs any other class, centred so that the
# intercept is the mean effect at the average comparison (as evmeta's centred designs)
d$tricyclic <- as.numeric(d$drug_class == "tricyclic")
d$tricyclic_c <- d$tricyclic - mean(d$tricyclic)
reg <- rma.mv(yi, V, mods = ~ tricyclic_c, random = ~ 1 | study / comparison_id, data = d, method = "REML")
fit_summary <- function(f) list(
  coef = as.numeric(f$beta), se = as.numeric(f$se), ci_lb = as.numeric(f$ci.lb), ci_ub = as.numeric(f$ci.ub),
  tau2 = f$sigma2[1], omega2 = f$sigma2[2], logLik = as.numeric(logLik(f)),
  n_studies = f$s.nlevels[1], n_comparisons = f$s.nlevels[2])
out <- list(
  meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
              call = "rma.mv(yi, V, random = ~ 1 | study / comparison_id, method = 'REML')",
              call_regression = "rma.mv(yi, V, mods = ~ tricyclic_c, random = ~ 1 | study / comparison_id, method = 'REML')",
              data = "data/fst_martins2025, outcome immobility (SMD, Hedges' g), comparisons from evmeta compute_effects"),
  k = fit$k,
  mean_tricyclic = mean(d$tricyclic),
  multilevel = fit_summary(fit),
  regression = fit_summary(reg))
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), file.path(dir, "metafor_rma_mv_multilevel.json"))
