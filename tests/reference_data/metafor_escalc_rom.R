# Reference numbers for evmeta's log ratio of means (effect_measure = "ROM") from metafor's escalc.
# Run from the repository root with R 4.2.2, metafor 3.8-1 (+ metadat), jsonlite:
#   Rscript tests/reference_data/metafor_escalc_rom.R
# Writes tests/reference_data/metafor_escalc_rom.json (read by tests/test_reference_metafor_escalc.py).
# Group 1 (m1i, sd1i, n1i) is the treatment arm and group 2 the control arm, so that
# yi = log(m1i / m2i) is evmeta's log(m_t / m_c); vtype = "LS" is escalc's default.
suppressMessages({library(metafor); library(jsonlite)})
rom <- function(d) {
  es <- escalc(measure = "ROM", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i, n2i = n2i,
               data = d, vtype = "LS")
  cbind(d, yi = as.numeric(es$yi), vi = as.numeric(es$vi))
}
res <- list(meta = list(R = R.version.string, metafor = as.character(packageVersion("metafor")),
                        call = 'escalc(measure = "ROM", m1i, sd1i, n1i, m2i, sd2i, n2i, vtype = "LS")'))
# normand1999 (metadat dat.normand1999): Normand S-LT (1999), Stat Med 18:321-359
d <- dat.normand1999
res$normand1999 <- rom(data.frame(study = d$source, m1i = d$m1i, sd1i = d$sd1i, n1i = d$n1i,
                                  m2i = d$m2i, sd2i = d$sd2i, n2i = d$n2i))
# The small arm-level dataset of tests/helpers.py (ARMS): treatment vs its control per comparison.
# B2021 gives SEMs (SD = SEM * sqrt(n)) and two treatment arms share its control arm.
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
res$tiny <- rom(tiny)
write_json(res, "tests/reference_data/metafor_escalc_rom.json", digits = NA, pretty = TRUE, auto_unbox = TRUE)
