# Wall time of bayesmeta() per outcome, on the effects evmeta's exact engine is timed on (same priors).
# Usage: Rscript bayesmeta_timing.R effects.csv REPEATS   (columns study, outcome, yi, vi; one row per study)
# Prints one line per outcome: "bayesmeta OUTCOME k=K median_s=S mu=M tau_median=T".
# Priors as evmeta's SMD defaults: mu ~ N(0, 3^2), tau ~ HalfNormal(1).
suppressMessages(library(bayesmeta))
a <- commandArgs(TRUE); d <- read.csv(a[1]); repeats <- as.integer(a[2])
for (o in unique(d$outcome)) {
  s <- d[d$outcome == o, ]
  times <- numeric(repeats)
  for (r in seq_len(repeats)) {
    t0 <- Sys.time()
    fit <- bayesmeta(y = s$yi, sigma = sqrt(s$vi), labels = s$study, mu.prior.mean = 0, mu.prior.sd = 3,
                     tau.prior = function(t) dhalfnormal(t, scale = 1))
    times[r] <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  }
  cat(sprintf("bayesmeta %s k=%d median_s=%.5f mu=%.4f tau_median=%.4f\n", o, nrow(s), median(times),
              fit$summary["mean", "mu"], fit$summary["median", "tau"]))
}
