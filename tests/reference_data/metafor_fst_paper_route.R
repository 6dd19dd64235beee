# Reference numbers for reproducing Martins et al. 2025 (forced swim test) the paper's way, from metafor.
# Run from the repository root with R 4.2.2, metafor 3.8-1, jsonlite:
#   Rscript tests/reference_data/metafor_fst_paper_route.R
# Writes tests/reference_data/metafor_fst_paper_route.json (read by tests/test_reproduce.py).
# As script/3_analysis.R of the paper: escalc(measure = "SMD", n1i = ctr_n_corr, n2i = atd_n_round,
# m1i = ctr_mean, m2i = atd_mean, sd1i = ctr_sd, sd2i = atd_sd), then rma(yi, vi) with REML; here the
# same numbers are read from evmeta's imported dataset (data/fst_martins2025/arms.csv), whose
# treatment rows carry the paper's control n in the column control_n_paper.
suppressMessages({library(metafor); library(jsonlite)})
arms <- read.csv("data/fst_martins2025/arms.csv", stringsAsFactors = FALSE, colClasses = c(study = "character"))
treat <- arms[arms$role == "treatment", ]
ctrl <- arms[arms$role == "control", c("study", "arm", "mean", "sd", "n")]
names(ctrl) <- c("study", "control_arm", "ctr_mean", "ctr_sd", "ctr_n")
d <- merge(treat, ctrl, by = c("study", "control_arm"))
es <- escalc(measure = "SMD", n1i = control_n_paper, n2i = n, m1i = ctr_mean, m2i = mean,
             sd1i = ctr_sd, sd2i = sd, data = d)
fit <- rma(yi, vi, data = es, method = "REML")
out <- list(meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
                        call = "rma(escalc(SMD, m1 = control with the paper's n, m2 = treatment), method = 'REML')"),
            k = fit$k, estimate = as.numeric(fit$beta), ci_lb = fit$ci.lb, ci_ub = fit$ci.ub,
            tau2 = fit$tau2, I2 = fit$I2)
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference_data/metafor_fst_paper_route.json")
