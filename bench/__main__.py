"""python -m bench [--quick|--full] [--recipe resizer|bit|all] [--out bench/results.md]

One TensorFlow per process: `python -m bench.stacks` runs this on several interpreters in turn
(the default and the Ascend stack) and compares them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

SECTIONS = ("throughput", "pipeline", "precision", "xla", "startup", "switches",  # FLOP/s: with precision
            "launchers", "fixed_costs")
DEFAULT_OUT = Path(__file__).resolve().parent / "results.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="tiny sizes: CI's smoke run")
    sizes.add_argument("--full", action="store_true", help="the real table (tens of minutes)")
    parser.add_argument("--recipe", choices=("resizer", "bit", "all"), default="all")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--rounds", type=int, help="alternating rounds (default: the size's)")
    parser.add_argument("--steady-steps", type=int,
                        help="measured steps after the warm-up, per fit (default: the size's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--json", type=Path, help="also write the rows here, as JSON")
    parser.add_argument("--work-dir", type=Path, help="keep data and run folders here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the selected sections, print the table, write --out; returns the results file."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench.run import run_sections
    from bench.sizes import DEFAULT, FULL, QUICK

    size = QUICK if args.quick else FULL if args.full else DEFAULT
    if args.rounds:
        size = dataclasses.replace(size, rounds=args.rounds)
    if args.steady_steps:
        size = dataclasses.replace(size, steady_steps=args.steady_steps)
    recipes = ["resizer", "bit"] if args.recipe == "all" else [args.recipe]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work_dir = args.work_dir or Path(tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        return run_sections(
            size, recipes, args.sections, work_dir, args.out, command.strip(), load, args.json
        )


if __name__ == "__main__":
    main()
