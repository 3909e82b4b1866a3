"""python -m bench.stacks: one `python -m bench` on several TensorFlow stacks, in alternating turns.

A process holds one TensorFlow, so comparing the default stack (TF 2.21) with the Ascend stack
(TF 2.6) takes one bench process per stack. Each turn runs every stack once, back to back, and
the order flips from turn to turn (A B, B A, A B, ...), so a slow change in the machine's load
hits both stacks alike:

    python -m bench.stacks --python /work/venv311/bin/python --python /work/venv39/bin/python \\
        --turns 3 --out /tmp/stacks.md -- --sections throughput --rounds 2 --steady-steps 12

Everything after `--` goes to every `python -m bench`. The table gives, per stack, each row's
median over the turns (a row measured in rounds, such as runner / plain, pools its rounds: every
ratio is still one taken side by side in one process), and across stacks each img/s row of a
stack over the first stack's, per turn (adjacent processes), and its median. Nothing here imports
TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.report import Row, format_value, markdown_table

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    split = argv.index("--") if "--" in argv else len(argv)
    own, bench_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", action="append", required=True, dest="pythons",
                        help="an interpreter of one stack (give two or more; the first is the reference)")
    parser.add_argument("--turns", type=int, default=2, help="how many times each stack runs")
    parser.add_argument("--out", type=Path, required=True, help="the comparison, as markdown")
    parser.add_argument("--work-dir", type=Path,
                        help="data, logs and each run's JSON (default: <out>-runs/ beside --out)")
    return parser.parse_args(own), bench_args


def turn_order(stacks: int, turn: int) -> list[int]:
    """Stack indices in the order turn `turn` runs them: forwards on even turns, backwards on odd."""
    order = list(range(stacks))
    return order if turn % 2 == 0 else order[::-1]


def run_turns(pythons: list[str], turns: int, bench_args: list[str], work_dir: Path) -> list[list[dict]]:
    """documents[turn][stack]: each run's JSON (bench/report.py write_json)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    documents: list[list[dict]] = []
    for turn in range(turns):
        found: dict[int, dict] = {}
        for stack in turn_order(len(pythons), turn):
            name = f"turn{turn + 1}-stack{stack + 1}"
            json_out, log = work_dir / f"{name}.json", work_dir / f"{name}.log"
            command = [pythons[stack], "-m", "bench", *bench_args, "--out", str(work_dir / f"{name}.md"),
                       "--json", str(json_out), "--work-dir", str(work_dir / f"stack{stack + 1}")]
            print(f"[stacks] {name}: {' '.join(command)}", flush=True)
            started = time.perf_counter()
            with log.open("w") as stream:
                subprocess.run(command, cwd=PROJECT_ROOT, env=env, stdout=stream,
                               stderr=subprocess.STDOUT, check=True)
            print(f"[stacks] {name}: {time.perf_counter() - started:.0f}s, log {log}", flush=True)
            found[stack] = json.loads(json_out.read_text())
        documents.append([found[stack] for stack in range(len(pythons))])
    return documents


def stack_label(document: dict) -> str:
    return f"TF {document['stack']['tensorflow']}"


def compare(documents: list[list[dict]]) -> list[Row]:
    """Per stack: each measured row's median over turns (rounds pooled); across stacks: each
    img/s row over the first stack's, per turn."""
    stacks = len(documents[0])
    labels = [stack_label(documents[0][stack]) for stack in range(stacks)]
    keys = [(r["section"], r["recipe"], r["measurement"], r["unit"])
            for r in documents[0][0]["rows"] if r["value"] is not None]
    rows: list[Row] = []
    for section, recipe, measurement, unit in keys:
        values: list[list[float]] = []  # values[stack][turn]: each process's median
        for stack in range(stacks):
            found = [_row(turn[stack], section, recipe, measurement) for turn in documents]
            values.append([r["value"] for r in found])
            pooled = [v for r in found for v in r.get("rounds") or [r["value"]]]
            what = f"rounds in {len(found)} turns" if any(r.get("rounds") for r in found) else "turns"
            rows.append(Row(section, recipe, f"{labels[stack]}: {measurement}", statistics.median(pooled),
                            unit, f"median of {len(pooled)} {what}: {_listed(pooled)}"))
        if unit == "img/s":
            for stack in range(1, stacks):
                ratios = [x / y for x, y in zip(values[stack], values[0])]
                rows.append(Row(section, recipe, f"{measurement}: {labels[stack]} / {labels[0]}",
                                statistics.median(ratios), "ratio",
                                f"per-turn ratios (adjacent processes) {_listed(ratios)}"))
    return rows


def _row(document: dict, section: str, recipe: str, measurement: str) -> dict:
    for row in document["rows"]:
        if (row["section"], row["recipe"], row["measurement"]) == (section, recipe, measurement):
            return row
    raise KeyError(f"{stack_label(document)} has no row {section} / {recipe} / {measurement}")


def _listed(values: list[float]) -> str:
    return ", ".join(format_value(v) for v in values)


def write_comparison(path: Path, documents: list[list[dict]], rows: list[Row], command: str) -> None:
    stacks = [
        f"- stack {i + 1}: {stack_label(d)}, Python {d['stack']['python']}; {d['stack']['keras']}"
        for i, d in enumerate(documents[0])
    ]
    loads = ", ".join(d["load_average"].split()[0] for turn in documents for d in turn)
    text = "\n".join([
        "# Stacks compared", "", f"`{command}`: {len(documents)} turns, alternating order.", "",
        *stacks, f"- load average (1 min) as each run started: {loads}", "",
        markdown_table(rows), "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args, bench_args = parse_args(argv)
    work_dir = args.work_dir or args.out.parent / (args.out.stem + "-runs")
    work_dir.mkdir(parents=True, exist_ok=True)
    documents = run_turns(args.pythons, args.turns, bench_args, work_dir)
    rows = compare(documents)
    write_comparison(args.out, documents, rows, "python -m bench.stacks " + " ".join(argv))
    print(markdown_table(rows))
    return args.out


if __name__ == "__main__":
    main()
