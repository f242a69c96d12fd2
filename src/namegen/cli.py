"""The `namegen` console command: `namegen sample PATH`, `namegen report PATH`, `namegen diagnose PATH`.

Each command imports what it needs when it runs: `--help` and argument mistakes answer
before torch loads, and nothing here imports Lightning.

Exit codes (shared with train.py): 0 success, 2 a user's mistake (one line on stderr), 1 a failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from namegen.errors import USAGE_ERROR, refusal


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def seed(text: str) -> int:
    value = integer(text)
    if not 0 <= value < 2**63:  # torch seeds are 64-bit
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a seed in 0 .. 2**63 - 1")
    return value


def temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be > 0 and finite (1.0 samples the model as trained)")
    return value


def sweep_runs(path: Path) -> list[Path]:
    """The run folders of a sweep folder, or [] if `path` is not one."""
    from namegen.results import is_run, run_folders

    return [] if is_run(path) else run_folders(path)


def cmd_sample(args: argparse.Namespace) -> None:
    from namegen.checkpoint import CheckpointError, load_checkpoint
    from namegen.sample import sample_names

    runs = sweep_runs(Path(args.path))
    if not runs:
        loaded = load_checkpoint(args.path)
        for name in sample_names(loaded.model, loaded.vocab, args.n, args.seed, args.temperature):
            print(name, flush=args.n > 1000)  # a long draw streams
        return
    # A sweep folder: every run side by side, same seed, one column per run labelled by its folder.
    columns = []
    for run in runs:
        try:
            loaded = load_checkpoint(run)
        except CheckpointError as e:  # one bad run must not hide the others' names
            print(f"namegen: skipping {run.name}: {e}", file=sys.stderr)
            continue
        columns.append([run.name, *sample_names(loaded.model, loaded.vocab, args.n, args.seed, args.temperature)])
    if not columns:
        raise CheckpointError(f"{args.path}: no run of this sweep has a usable checkpoint")
    widths = [max(len(cell) for cell in col) for col in columns]
    for i, row in enumerate(zip(*columns)):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cmd_report(args: argparse.Namespace) -> None:
    from namegen.report import report  # matplotlib is only imported when a report is asked for

    print(report(args.path, args.out, args.n, args.seed))


def cmd_diagnose(args: argparse.Namespace) -> None:
    from namegen.diagnosis import diagnose_run, report_text
    from namegen.errors import UserError
    from namegen.results import is_run

    if args.run and not args.fix:
        raise UserError("--run runs the fix: give it with --fix (namegen diagnose RUN --fix --run)")
    if not args.fix:
        print(report_text(args.path))
        return
    from namegen.diagnosis.repair import fix_command, run_fix, typed_command

    run = Path(args.path)
    if not is_run(run):
        raise UserError(f"--fix needs one run folder, not {str(run)!r}; give outputs/runs/<time> or one run of a sweep")
    diagnosis = diagnose_run(run)
    print(run_fix(run, diagnosis) if args.run else typed_command(fix_command(run, diagnosis)))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="namegen", description="Sample names from namegen checkpoints; report on and "
                                "diagnose runs and sweeps. Exit codes: 0 ok, 2 a mistake in the input, 1 a failure.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="print names drawn from a checkpoint")
    s.add_argument("path", help="a .ckpt file, a run folder (its checkpoints/best.ckpt), or a sweep folder (every run)")
    s.add_argument("-n", type=positive_int, default=10, help="how many names (default 10)")
    s.add_argument("--seed", type=seed, default=0, help="random seed; the i-th name of a seed never changes (default 0)")
    s.add_argument("--temperature", type=temperature, default=1.0, help="< 1 safer, > 1 wilder (default 1.0)")
    s.set_defaults(func=cmd_sample)
    r = sub.add_parser("report", help="render a run's or a sweep's summary, curves, diagnostics, diagnosis and "
                                      "samples as Markdown + PNGs")
    r.add_argument("path", help="a run folder or a sweep folder (outputs/sweeps/<time>)")
    r.add_argument("--out", help="where to write report.md and its figures (default PATH/report)")
    r.add_argument("-n", type=positive_int, default=8, help="names sampled per run (default 8)")
    r.add_argument("--seed", type=seed, default=0, help="sampling seed (default 0)")
    r.set_defaults(func=cmd_report)
    d = sub.add_parser("diagnose", help="what went wrong in a run (or each run of a sweep), from its event files")
    d.add_argument("path", help="a run folder or a sweep folder")
    d.add_argument("--fix", action="store_true", help="print the `python train.py ...` command that reruns the run "
                                                      "with every fix (into a fresh sibling folder)")
    d.add_argument("--run", action="store_true", help="with --fix: run that command, then print before and after")
    d.set_defaults(func=cmd_diagnose)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from namegen.errors import UserError

    try:
        args.func(args)
    except UserError as e:
        print(refusal(str(e)), file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:  # `namegen sample ... | head`: the reader has what it wanted
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
