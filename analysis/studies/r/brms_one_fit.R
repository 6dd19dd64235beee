# Copied unchanged (below this line) from ../shared/reference/brms_one_fit.R, so that `evmeta benchmark` runs on a machine with only the repo.
# One brms random-effects meta-analysis of one outcome, as a Bayesian R user would write it.
# Usage: Rscript brms_one_fit.R effects.csv OUTCOME   (columns study, outcome, yi, vi)
suppressMessages(library(brms))
a <- commandArgs(TRUE); d <- read.csv(a[1]); d <- d[d$outcome == a[2], ]
d <- d[!duplicated(d$study), ]; d$sei <- sqrt(d$vi)
t0 <- Sys.time()
fit <- brm(yi | se(sei) ~ 1 + (1 | study), data = d, prior = c(prior(normal(0, 3), class = Intercept), prior(normal(0, 1), class = sd)),
           chains = 4, iter = 2000, warmup = 1000, seed = 1, cores = 2, refresh = 0, silent = 2)
cat(sprintf("brms k=%d mu=%.3f total_in_R=%.1f s\n", nrow(d), fixef(fit)[1, 1], as.numeric(difftime(Sys.time(), t0, units = "secs"))))
