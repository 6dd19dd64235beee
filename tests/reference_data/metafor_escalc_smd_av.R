# Reference numbers for evmeta's SMD with metafor's "AV" sampling variance (compute_effects(vtype = "AV")).
# Run from the repository root with R 4.2.2, metafor 3.8-1 (+ metadat), jsonlite:
#   Rscript tests/reference_data/metafor_escalc_smd_av.R
# Writes tests/reference_data/metafor_escalc_smd_av.json (read by tests/test_reference_metafor_escalc_av.py).
# Group 1 (m1i, sd1i, n1i) is the treatment arm and group 2 the control arm. In metafor 3.8-1 the AV
# variance is vi = 1/n1i + 1/n2i + mnwyi^2 / (2 (n1i + n2i)) with mnwyi = .wmean(yi, n1i + n2i), the
# weighted mean over ALL rows of the escalc call; evmeta takes it over the comparisons of one outcome,
# so escalc is called once per outcome here.
suppressMessages({library(metafor); library(jsonlite)})
smd_av <- function(d) {
  es <- escalc(measure = "SMD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i, n2i = n2i,
               data = d, vtype = "AV")
  mnwyi <- sum(es$yi * (d$n1i + d$n2i)) / sum(d$n1i + d$n2i)
  list(rows = cbind(d, yi = as.numeric(es$yi), vi = as.numeric(es$vi)), mnwyi = mnwyi)
}
per_outcome <- function(d) lapply(split(d, d$outcome), smd_av)
res <- list(meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
                        call = 'escalc(measure = "SMD", m1i, sd1i, n1i, m2i, sd2i, n2i, vtype = "AV"), per outcome'))
# normand1999 (metadat dat.normand1999): Normand S-LT (1999), Stat Med 18:321-359; one outcome.
d <- dat.normand1999
res$normand1999 <- smd_av(data.frame(study = d$source, m1i = d$m1i, sd1i = d$sd1i, n1i = d$n1i,
                                     m2i = d$m2i, sd2i = d$sd2i, n2i = d$n2i))
# The small arm-level dataset of tests/helpers.py (ARMS); B2021 gives SEMs (SD = SEM * sqrt(n)) and
# its two treatment arms share the control arm.
tiny <- data.frame(
  study   = c("A2020", "A2020", "B2021", "B2021", "C2022"),
  outcome = c("BMD", "Tb_Sp", "BMD", "BMD", "BMD"),
  arm     = c("ev", "ev", "ev_low", "ev_high", "ev"),
  m1i     = c(0.26, 330, 0.23, 0.25, 0.24),
  sd1i    = c(0.03, 55, 0.012 * sqrt(6), 0.011 * sqrt(7), 0.04),
  n1i     = c(8, 8, 6, 7, 10),
  m2i     = c(0.22, 400, 0.20, 0.20, 0.21),
  sd2i    = c(0.03, 60, 0.01 * sqrt(6), 0.01 * sqrt(6), 0.04),
  n2i     = c(8, 8, 6, 6, 10))
res$tiny <- per_outcome(tiny)
# The simulated flagship dataset data/bmsc_ev_osteoporosis (SIMULATED data): every treatment arm
# against its control arm, SEM converted to SD, seven outcomes, studies with two arms sharing a control.
a <- read.csv("data/bmsc_ev_osteoporosis/arms.csv", stringsAsFactors = FALSE)
a$sd <- ifelse(is.na(a$sd), a$sem * sqrt(a$n), a$sd)
tr <- a[a$role == "treatment", ]
ct <- a[a$role == "control", c("study", "arm", "outcome", "mean", "sd", "n")]
names(ct) <- c("study", "control_arm", "outcome", "m2i", "sd2i", "n2i")
m <- merge(tr, ct, by = c("study", "control_arm", "outcome"), sort = FALSE)
flag <- data.frame(study = m$study, outcome = m$outcome, arm = m$arm, m1i = m$mean, sd1i = m$sd, n1i = m$n,
                   m2i = m$m2i, sd2i = m$sd2i, n2i = m$n2i, stringsAsFactors = FALSE)
flag <- flag[order(flag$outcome, flag$study, flag$arm), ]
res$bmsc_ev_osteoporosis <- per_outcome(flag)
write_json(res, "tests/reference_data/metafor_escalc_smd_av.json", digits = NA, pretty = TRUE, auto_unbox = TRUE)
