"""The `namegen` console command: `namegen sample PATH ...` and `namegen report SWEEP ...`."""

from __future__ import annotations

import argparse
import sys

from pathlib import Path

from namegen.checkpoint import BEST, CHECKPOINT_DIR, load_checkpoint
from namegen.errors import UserError
from namegen.sample import sample_names


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0 (1.0 samples the model as trained)")
    return value


def cmd_sample(args: argparse.Namespace) -> None:
    runs = sweep_runs(Path(args.path))
    if not runs:
        loaded = load_checkpoint(args.path)
        for name in sample_names(loaded.model, loaded.vocab, args.n, args.seed, args.temperature):
            print(name)
        return
    # A sweep folder: every run side by side, same seed, one column per run labelled by its folder.
    untrained = [p.name for p in Path(args.path).iterdir() if p.is_dir() and p not in runs and (p / ".hydra").is_dir()]
    if untrained:
        print(f"namegen: skipping runs without checkpoints/{BEST}: {', '.join(sorted(untrained))}", file=sys.stderr)
    columns = []
    for run in runs:
        loaded = load_checkpoint(run)
        columns.append([run.name, *sample_names(loaded.model, loaded.vocab, args.n, args.seed, args.temperature)])
    widths = [max(len(cell) for cell in col) for col in columns]
    for i, row in enumerate(zip(*columns)):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cmd_report(args: argparse.Namespace) -> None:
    from namegen.report import report  # matplotlib is only imported when a report is asked for

    print(report(args.sweep, args.out, args.n, args.seed))


def sweep_runs(path: Path) -> list[Path]:
    """The trained runs of a sweep folder, or [] if `path` is not one."""
    if not path.is_dir() or (path / CHECKPOINT_DIR).is_dir():
        return []
    return sorted(p for p in path.iterdir() if (p / CHECKPOINT_DIR / BEST).is_file())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="namegen", description="Sample names from namegen checkpoints; report on sweeps.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="print names drawn from a checkpoint")
    s.add_argument("path", help="a .ckpt file, a run folder (its checkpoints/best.ckpt), or a sweep folder (every run)")
    s.add_argument("-n", type=positive_int, default=10, help="how many names (default 10)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same names (default 0)")
    s.add_argument("--temperature", type=positive_float, default=1.0, help="< 1 safer, > 1 wilder (default 1.0)")
    s.set_defaults(func=cmd_sample)
    r = sub.add_parser("report", help="render a sweep's summary, curves, diagnostics and samples as Markdown + PNGs")
    r.add_argument("sweep", help="a sweep folder (outputs/sweeps/<time>)")
    r.add_argument("--out", help="where to write report.md and its figures (default SWEEP/report)")
    r.add_argument("-n", type=positive_int, default=8, help="names sampled per run (default 8)")
    r.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"namegen: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
