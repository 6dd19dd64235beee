"""The ``evmeta`` command line: parses arguments, calls the library, prints results.

Exit codes (documented in README.md):

* 0 — success (warnings may have been printed);
* 1 — the dataset or another input is invalid (every problem is listed on stderr, nothing written);
* 2 — the command line itself is wrong (argparse usage error);
* 3 — a fit failed its convergence gates (results are still written, marked failed);
* 130 — interrupted (Ctrl-C); outputs are written atomically, so nothing partial remains.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from analysis.atomic import write_text_atomic
from analysis.config import DEFAULT_DATASET, REPORTS_DIR
from analysis.dataset.measures import ARM_MEASURES
from analysis.dataset.problems import DatasetError, NotApplicable, Problem, errors
from analysis.fitting.dispatch import LIKELIHOODS, MODELS, SLOPE_SCALES, FitRequest
from analysis.inference.decision import DecisionSettings
from models.priors import PriorSet, PriorSpec

#: ``--structure`` choices -> structures fitted (names of models.multivariate.STRUCTURES, spelled out
#: here so that the CLI does not import PyMC before it is needed); "auto" keeps the PSIS-LOO best.
STRUCTURE_CHOICES: dict[str, tuple[str, ...]] = {
    "auto": ("unstructured", "cs", "independent"),
    "unstructured": ("unstructured",),
    "cs": ("cs",),
    "independent": ("independent",),
}

if TYPE_CHECKING:
    from analysis.dataset.effects import EffectTable
    from analysis.dataset.load import Dataset
    from analysis.results.outcome import FitResult
    from analysis.run.pipeline import RunPlan

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_NOT_CONVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Interrupted(BaseException):
    """Raised by the CLI's SIGINT/SIGTERM handlers.

    Not a KeyboardInterrupt on purpose: nutpie (like PyMC's own sampler) catches KeyboardInterrupt
    and returns the draws made so far, which would then be reported; any other exception cancels
    its sampler and propagates (``tests/test_interrupt.py``). This exception stops the run
    at once, and the staging folders and temporary files are removed on the way out.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    """``evmeta validate DATASET``: list every problem; exit 1 if any is an error."""
    from analysis.dataset.validate import validate_dataset

    problems = validate_dataset(args.dataset)
    _print_problems(problems)
    n_err = len(errors(problems))
    n_warn = len(problems) - n_err
    status = "INVALID" if n_err else "valid"
    print(f"{args.dataset}: {status} ({n_err} error(s), {n_warn} warning(s))")
    return EXIT_INVALID if n_err else EXIT_OK


def cmd_effects(args: argparse.Namespace) -> int:
    """``evmeta effects DATASET [--out FILE] [--measure M]``: the effect-size table (and shared-control covariances)."""
    from analysis.dataset.effects import compute_effects

    dataset = _load(args)
    _print_problems(dataset.warnings)
    table = compute_effects(dataset)
    text = table.data.to_csv(index=False, lineterminator="\n", float_format="%.10g")
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    out = Path(args.out)
    write_text_atomic(out, text)
    print(f"wrote {out} ({len(table.data)} comparisons)")
    if table.covariance:
        cov_path = out.with_name(f"{out.stem}.covariance.csv")
        write_text_atomic(
            cov_path, table.covariance_long().to_csv(index=False, lineterminator="\n", float_format="%.10g")
        )
        print(f"wrote {cov_path} (sampling covariances of comparisons sharing a control arm)")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """``evmeta simulate --out DIR [--seed N]``: write a simulated flagship-design dataset."""
    from analysis.dataset.simulate import simulate_dataset, write_dataset

    path = write_dataset(simulate_dataset(args.seed), Path(args.out), overwrite=args.overwrite)
    print(f"wrote simulated dataset to {path} (seed {args.seed}); SIMULATED data, not published numbers")
    return EXIT_OK


def cmd_import_comparisons(args: argparse.Namespace) -> int:
    """``evmeta import comparisons FILE --out DIR``: a comparison sheet (CSV/XLSX) as a dataset folder."""
    from analysis.importing.comparisons import import_comparisons

    report = import_comparisons(
        args.file,
        args.out,
        columns=args.columns,
        sheet=args.sheet,
        encoding=args.encoding,
        overwrite=args.overwrite,
    )
    _print_problems(report.warnings)
    print(report)
    return EXIT_OK


def _add_import_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="make a dataset folder from an extraction sheet")
    kinds = p.add_subparsers(dest="kind", required=True)
    p = kinds.add_parser(
        "comparisons", help="a sheet with one treatment-vs-control comparison per row (CSV or XLSX; data/README.md)"
    )
    p.add_argument("file", type=Path, help="the sheet: .csv or .xlsx")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--columns", type=Path, default=None, help="the map (TOML): columns, outcomes, moderators, ...")
    p.add_argument("--sheet", default=None, help="worksheet of an XLSX file (default: the first)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of a CSV file (default utf-8), e.g. latin-1")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=cmd_import_comparisons)


def _prior(text: str) -> PriorSpec:
    try:
        return PriorSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load(args: argparse.Namespace) -> Dataset:
    """Load and validate ``args.dataset``, analysed with ``--measure`` if given (everything downstream follows it)."""
    from analysis.dataset.effects import with_measure
    from analysis.dataset.load import load_dataset

    dataset = load_dataset(args.dataset)
    return dataset if getattr(args, "measure", None) is None else with_measure(dataset, args.measure)


def _priors(args: argparse.Namespace, measure: str) -> PriorSet:
    """``--mu-prior``/``--tau-prior``/``--omega-prior`` where given, else the defaults of the effect measure."""
    from dataclasses import replace

    from models.priors import default_priors

    defaults = default_priors(measure)
    omega = getattr(args, "omega_prior", None) or defaults.omega
    return replace(defaults, mu=args.mu_prior or defaults.mu, tau=args.tau_prior or defaults.tau, omega=omega)


def _progress(message: str) -> None:
    print(f"[evmeta {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _fit_request(args: argparse.Namespace) -> FitRequest:
    from analysis.fitting.sampling import SamplerSettings

    return FitRequest(
        model=args.model,
        engine=args.engine,
        seed=args.seed,
        sampler=SamplerSettings(draws=args.draws, tune=args.tune, chains=args.chains),
        moderator=args.moderator,
        progressbar=sys.stderr.isatty(),
        likelihood=args.likelihood,
        beta_prior=args.beta_prior,
        slope_scale=args.slope_scale,
        center=not args.no_center,
        decision=_decision(args),
    )


def cmd_fit(args: argparse.Namespace) -> int:
    """``evmeta fit DATASET --outcome ID | --all``: fit, print the report, write JSON/figures/posteriors."""
    from dataclasses import replace

    from analysis.dataset.effects import compute_effects
    from analysis.fitting.dispatch import fit_outcome
    from analysis.report.write import write_fit_outputs

    if args.model != "multivariate" and not (args.outcome or args.all):
        print("evmeta fit: error: give --outcome ID or --all", file=sys.stderr)
        return EXIT_USAGE
    request = _fit_request(args)
    dataset = _load(args)
    request = replace(request, priors=_priors(args, dataset.effect_measure))
    _print_problems(dataset.warnings)
    table = compute_effects(dataset)
    if args.model == "multivariate":
        return _fit_multivariate(args, dataset, table, request)
    outcomes = list(dataset.outcomes) if args.all else [args.outcome]
    results, skipped = [], {}
    for i, outcome in enumerate(outcomes, start=1):
        _progress(f"[{i}/{len(outcomes)}] {outcome}: {args.model} ({args.engine})")
        try:
            results.append(fit_outcome(dataset, outcome, request, table=table))
        except NotApplicable as exc:
            if not args.all:
                raise
            skipped[outcome] = str(exc)
            _progress(f"{outcome}: skipped ({exc})")
    for result in results:
        print(result, end="\n\n")
    for outcome, reason in skipped.items():
        print(f"{outcome}: not fitted: {reason}")
    written = write_fit_outputs(results, json_path=args.json, out_dir=args.out, all_outcomes=args.all, skipped=skipped)
    for path in written:
        print(f"wrote {path}")
    return _exit_for(results)


def _exit_for(results: Sequence[FitResult]) -> int:
    failed = [getattr(r, "outcome", None) for r in results if not getattr(r, "converged", True)]
    if failed:
        names = ", ".join(getattr(o, "id", str(o)) for o in failed)
        print(f"evmeta: FAILED convergence gates: {names}", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return EXIT_OK


def _fit_multivariate(args: argparse.Namespace, dataset: Dataset, table: EffectTable, request: FitRequest) -> int:
    from analysis.fitting.multivariate_structures import fit_multivariate_structures
    from analysis.report.files import write_json

    outcomes = None if not args.outcomes else ("all" if args.outcomes == ["all"] else args.outcomes)
    _progress(
        "multivariate model over "
        f"{', '.join(outcomes) if isinstance(outcomes, list) else outcomes or 'default outcomes'}"
    )
    structures = STRUCTURE_CHOICES[args.structure]
    if len(structures) > 1:
        _progress(f"comparing between-study structures {', '.join(structures)} by PSIS-LOO over studies")
    result, _ = fit_multivariate_structures(
        dataset,
        outcomes=outcomes,
        rho_within=args.rho_within,
        seed=args.seed,
        sampler=request.sampler,
        table=table,
        priors=request.priors,
        progressbar=request.progressbar,
        structures=structures,
    )
    print(result)
    if args.json is not None:
        print(f"wrote {write_json(args.json, result.to_dict())}")
    return _exit_for([result])


def cmd_run(args: argparse.Namespace) -> int:
    """``evmeta run [DATASET] [--out DIR]``: the whole analysis and its report."""
    from analysis.fitting.sampling import SamplerSettings
    from analysis.report.write import write_run_report
    from analysis.run.pipeline import execute_plan, plan_run

    started = time.perf_counter()
    sampler = SamplerSettings(draws=args.draws, tune=args.tune, chains=args.chains)
    _progress(f"loading and validating {args.dataset}")
    plan = plan_run(_load(args), seed=args.seed, sampler=sampler, engine=args.engine, decision=_decision(args))
    if not args.no_cache and _report_up_to_date(args.out, plan):
        _progress(
            f"{args.out} is up to date (same data, settings and code): nothing to do "
            f"({time.perf_counter() - started:.1f} s); use --no-cache to recompute"
        )
        return EXIT_OK
    run = execute_plan(plan, progress=_progress, workers=args.workers, use_cache=not args.no_cache, started=started)
    _print_problems(run.dataset.warnings)
    _progress(f"writing the report to {args.out}")
    write_run_report(run, args.out, elapsed=time.perf_counter() - started)
    _progress(f"done in {time.perf_counter() - started:.1f} s: {args.out / 'report.md'}")
    if run.failed:
        print(
            f"evmeta: FAILED convergence gates: {', '.join(run.failed)} (flagged at the top of the report)",
            file=sys.stderr,
        )
        return EXIT_NOT_CONVERGED
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """``evmeta compare``: fits side by side, from saved JSON files or the standard set for one outcome."""
    import json

    from analysis.checks.compare import compare_table, standard_comparison
    from analysis.plots.compare import compare_forest
    from analysis.report.files import write_csv, write_figure
    from analysis.report.tables import compare_markdown

    if args.fits:
        fits = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in args.fits}
        frame, bayes = compare_table(fits), None
    elif args.dataset is not None and args.outcome:
        from analysis.dataset.load import load_dataset

        dataset = load_dataset(args.dataset)
        _progress(f"{args.outcome}: NUTS and exact fits, alternative priors, DL and REML")
        frame, bayes = standard_comparison(dataset, args.outcome, seed=args.seed)
    else:
        print("evmeta compare: error: give DATASET --outcome ID, or --fits FILE.json ...", file=sys.stderr)
        return EXIT_USAGE
    print(compare_markdown(frame))
    if args.out is not None:
        print(f"wrote {write_csv(args.out / 'compare.csv', frame)}")
        print(f"wrote {write_text_atomic(args.out / 'compare.md', compare_markdown(frame) + chr(10))}")
        if bayes:
            for path in write_figure(compare_forest(bayes), args.out / "compare_forest"):
                print(f"wrote {path}")
    return EXIT_OK


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="posterior summaries side by side (engines, priors, models, DL/REML)")
    p.add_argument("dataset", type=Path, nargs="?", default=None)
    p.add_argument("--outcome", help="outcome id (standard comparison set)")
    p.add_argument("--fits", type=Path, nargs="+", default=None, help="JSON files written by evmeta fit --json")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="folder for compare.csv, compare.md and the forest plot")
    p.set_defaults(func=cmd_compare)


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``evmeta benchmark``: time cold/warm runs, a NUTS fit and the exact engine (see analysis.studies.benchmark)."""
    from analysis.studies.benchmark import main as benchmark_main

    return benchmark_main([])


def _report_up_to_date(out: Path, plan: RunPlan) -> bool:
    """True if ``out`` holds a complete report of exactly this run (same run key)."""
    import json

    from analysis.run import cache

    manifest = out / "manifest.json"
    if not (manifest.is_file() and (out / "report.html").is_file()):
        return False
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    same = bool(recorded.get("run_key")) and recorded["run_key"] == plan.key and not recorded.get("failed_fits")
    # only a machine that computed this run itself (its cache holds every outcome) skips it
    return same and all(cache.contains(job.key) for job in plan.jobs)


def cmd_influence(args: argparse.Namespace) -> int:
    """``evmeta influence DATASET --outcome ID``: exact leave-one-study-out refits and PSIS-LOO Pareto k."""
    from analysis.checks.influence import influence_analysis
    from analysis.dataset.load import load_dataset
    from analysis.fitting.sampling import SamplerSettings
    from analysis.report.files import write_json

    dataset = load_dataset(args.dataset)
    _print_problems(dataset.warnings)
    outcomes = list(dataset.outcomes) if args.all else [args.outcome]
    results = {}
    for outcome in outcomes:
        _progress(f"{outcome}: influence ({args.engine} posterior for PSIS-LOO, exact refits)")
        results[outcome] = influence_analysis(
            dataset,
            outcome,
            priors=_priors(args, dataset.effect_measure),
            engine=args.engine,
            seed=args.seed,
            sampler=SamplerSettings(),
            progressbar=sys.stderr.isatty(),
        )
        print(results[outcome], end="\n\n")
    if args.json is not None:
        payload = results[outcomes[0]].to_dict() if not args.all else {o: r.to_dict() for o, r in results.items()}
        print(f"wrote {write_json(args.json, payload)}")
    return EXIT_OK


def _add_influence_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("influence", help="study influence: exact leave-one-study-out refits and PSIS-LOO Pareto k")
    p.add_argument("dataset", type=Path)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--outcome")
    which.add_argument("--all", action="store_true")
    p.add_argument("--engine", choices=["nuts", "exact"], default="nuts")
    p.add_argument("--tau-prior", type=_prior, default=None, help="default: the effect measure's (see evmeta fit)")
    p.add_argument("--mu-prior", type=_prior, default=None, help="default: the effect measure's (see evmeta fit)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(func=cmd_influence)


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole analysis of a dataset and its report")
    p.add_argument("dataset", type=Path, nargs="?", default=DEFAULT_DATASET, help=f"default {DEFAULT_DATASET}")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help=f"report folder (default {REPORTS_DIR})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="worker processes for the outcomes (default 2)")
    _add_measure_option(p)
    p.add_argument(
        "--engine",
        choices=["nuts", "exact"],
        default="nuts",
        help="nuts: every analysis (default); exact: the exact engine only, in seconds (no NUTS-based checks)",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute everything (ignore the .evmeta_cache/)")
    _add_decision_options(p)
    p.set_defaults(func=cmd_run)


def _add_decision_options(p: argparse.ArgumentParser) -> None:
    from analysis.inference.decision import MIN_EFFECT_DEFAULTS

    defaults = ", ".join(f"{m} {v:.3g}" for m, v in MIN_EFFECT_DEFAULTS.items())
    p.add_argument(
        "--min-effect",
        type=float,
        default=None,
        help=f"minimal relevant effect on the measure's scale, benefit direction, for P(mu > delta) "
        f"(default: {defaults})",
    )
    p.add_argument(
        "--planned-n",
        type=int,
        default=None,
        help="animals per arm of a planned new study, for its predicted effect and replication probability "
        "(default: the median arm size of the outcome's data)",
    )


def _decision(args: argparse.Namespace) -> DecisionSettings:
    return DecisionSettings(min_effect=args.min_effect, planned_n=args.planned_n)


def _add_measure_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--measure",
        choices=list(ARM_MEASURES),
        default=None,
        help="effect measure of arm-level data (default: effect_measure of dataset.toml): SMD (Hedges' g), "
        "NMD (normalised mean difference, needs a sham arm per study) or ROM (log ratio of means)",
    )


def _prior_defaults_help() -> str:
    from models.priors import default_priors

    return "; ".join(f"{m} {default_priors(m).mu}, {default_priors(m).tau}" for m in ARM_MEASURES)


def _add_fit_parser(sub: argparse._SubParsersAction) -> None:
    from models.priors import PRIOR_FORMS

    p = sub.add_parser("fit", help="fit the Bayesian random-effects model to one outcome or all outcomes")
    p.add_argument("dataset", type=Path)
    which = p.add_mutually_exclusive_group(required=False)
    which.add_argument("--outcome", help="outcome id declared in dataset.toml")
    which.add_argument("--all", action="store_true", help="fit every outcome of the dataset")
    p.add_argument("--model", choices=list(MODELS), default="random-effects")
    p.add_argument(
        "--moderator", default=None, help="meta-regression: a moderator declared in dataset.toml, or 'all' (joint)"
    )
    p.add_argument(
        "--beta-prior",
        type=_prior,
        default=None,
        help="meta-regression: prior normal:0:S of every slope (default S = 1 for one moderator, 0.5 for several)",
    )
    p.add_argument(
        "--slope-scale",
        choices=list(SLOPE_SCALES),
        default="standardised",
        help="meta-regression: S per contrast / two SDs of a numeric moderator (standardised) or per unit",
    )
    p.add_argument(
        "--no-center", action="store_true", help="meta-regression: do not centre numeric moderators (as bayesmeta::bmr)"
    )
    p.add_argument(
        "--outcomes",
        nargs="+",
        default=None,
        help="multivariate: outcome ids, or 'all' (default BV_TV Tb_N Tb_Sp Tb_Th, else every co-reported outcome)",
    )
    p.add_argument(
        "--rho-within",
        type=float,
        default=None,
        help="multivariate: fix the within-study correlation (default: estimated under its beta:2:2 prior)",
    )
    p.add_argument(
        "--structure",
        choices=sorted(STRUCTURE_CHOICES),
        default="auto",
        help="multivariate: between-study correlation structure; auto = the best of all three by PSIS-LOO",
    )
    p.add_argument("--engine", choices=["nuts", "exact"], default="nuts")
    p.add_argument(
        "--likelihood",
        choices=list(LIKELIHOODS),
        default="default",
        help="default: arm for random effects with NUTS on arm-level SMD data, else normal; "
        "normal: effect sizes ~ N(theta, v); arm: exact likelihood of the arm means and SDs, comparisons nested "
        "in studies",
    )
    _add_measure_option(p)
    p.add_argument(
        "--tau-prior",
        type=_prior,
        default=None,
        help=f"default: the effect measure's (see --mu-prior); forms: {PRIOR_FORMS}",
    )
    p.add_argument(
        "--mu-prior", type=_prior, default=None, help=f"defaults (mu, tau) per measure: {_prior_defaults_help()}"
    )
    p.add_argument(
        "--omega-prior",
        type=_prior,
        default=None,
        help="between-comparison SD within a study (arm-level likelihood); default halfnormal:0.5 on the SMD scale",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--json", type=Path, default=None, help="write the summaries as JSON to this file")
    _add_decision_options(p)
    p.add_argument("--out", type=Path, default=None, help="folder for figures, tables and NetCDF posteriors")
    p.set_defaults(func=cmd_fit)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``evmeta`` with all its subcommands."""
    from analysis.dataset.simulate import DEFAULT_SEED

    parser = argparse.ArgumentParser(prog="evmeta", description="Bayesian meta-analysis of preclinical animal studies.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a dataset against the data contract")
    p.add_argument("dataset", type=Path)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("effects", help="effect-size table (one row per comparison and outcome)")
    p.add_argument("dataset", type=Path)
    _add_measure_option(p)
    p.add_argument("--out", type=Path, default=None, help="CSV file to write (default: standard output)")
    p.set_defaults(func=cmd_effects)
    p = sub.add_parser("simulate", help="write a simulated dataset with the flagship design")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.set_defaults(func=cmd_simulate)
    _add_fit_parser(sub)
    _add_run_parser(sub)
    _add_compare_parser(sub)
    _add_influence_parser(sub)
    _add_import_parser(sub)
    p = sub.add_parser(
        "benchmark",
        help="measure run time (cold/warm), compile vs sampling, exact engine; writes reports/benchmark.json",
    )
    p.set_defaults(func=cmd_benchmark)
    return parser


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return func(args)
    except DatasetError as exc:
        _print_problems(exc.problems)
        print(f"{exc.path}: INVALID ({len(errors(exc.problems))} error(s)); nothing written", file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"evmeta: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (KeyboardInterrupt, Interrupted) as exc:
        print("evmeta: interrupted; no partial output was left behind", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Interrupted) else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``evmeta`` console script."""
    args = build_parser().parse_args(argv)
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return _run(args.func, args)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return _run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
