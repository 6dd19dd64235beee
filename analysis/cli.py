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
from collections.abc import Callable, Sequence
from pathlib import Path

from analysis.atomic import write_text_atomic
from analysis.config import DEFAULT_DATASET
from analysis.problems import DatasetError, Problem, errors

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_NOT_CONVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    """``evmeta validate DATASET``: list every problem; exit 1 if any is an error."""
    from analysis.validate import validate_dataset

    problems = validate_dataset(args.dataset)
    _print_problems(problems)
    n_err = len(errors(problems))
    n_warn = len(problems) - n_err
    status = "INVALID" if n_err else "valid"
    print(f"{args.dataset}: {status} ({n_err} error(s), {n_warn} warning(s))")
    return EXIT_INVALID if n_err else EXIT_OK


def cmd_effects(args: argparse.Namespace) -> int:
    """``evmeta effects DATASET [--out FILE]``: the effect-size table (and shared-control covariances)."""
    from analysis.dataset import load_dataset
    from analysis.effects import compute_effects

    dataset = load_dataset(args.dataset)
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
        write_text_atomic(cov_path, table.covariance_long().to_csv(index=False, lineterminator="\n", float_format="%.10g"))
        print(f"wrote {cov_path} (sampling covariances of comparisons sharing a control arm)")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """``evmeta simulate --out DIR [--seed N]``: write a simulated flagship-design dataset."""
    from analysis.simulate import simulate_dataset, write_dataset

    path = write_dataset(simulate_dataset(args.seed), Path(args.out), overwrite=args.overwrite)
    print(f"wrote simulated dataset to {path} (seed {args.seed}); SIMULATED data, not published numbers")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``evmeta`` with all its subcommands."""
    from analysis.simulate import DEFAULT_SEED

    parser = argparse.ArgumentParser(prog="evmeta", description="Bayesian meta-analysis of preclinical animal studies.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a dataset against the data contract")
    p.add_argument("dataset", type=Path)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("effects", help="effect-size table (Hedges' g, one row per comparison and outcome)")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, default=None, help="CSV file to write (default: standard output)")
    p.set_defaults(func=cmd_effects)
    p = sub.add_parser("simulate", help="write a simulated dataset with the flagship design")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.set_defaults(func=cmd_simulate)
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
    except KeyboardInterrupt:
        print("evmeta: interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``evmeta`` console script."""
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
