"""Runs the chosen sections in order, printing each row as it is measured."""
from __future__ import annotations

import time
from pathlib import Path

from bench.fixed_costs import fixed_cost_rows
from bench.launchers import launcher_rows
from bench.report import Row, markdown_table, write_json, write_results
from bench.sections import (
    Bench,
    pipeline_rows,
    precision_and_flops_rows,
    startup_rows,
    switch_rows,
    throughput_rows,
    xla_rows,
)
from bench.sizes import BenchSize

PER_RECIPE = {
    "throughput": throughput_rows,
    "pipeline": pipeline_rows,
    "precision": precision_and_flops_rows,
    "xla": xla_rows,
    "fixed_costs": fixed_cost_rows,
}

WHOLE_RUNS = {  # quickstart runs, not per recipe
    "startup": startup_rows,
    "switches": switch_rows,
    "launchers": lambda bench: launcher_rows(bench.work_dir, bench.size.launcher_run, bench.size.rounds),
}


def run_sections(
    size: BenchSize, recipes: list[str], sections: list[str], work_dir: Path, out: Path,
    command: str, load_average: str, json_out: Path | None = None,
) -> Path:
    bench = Bench(size, work_dir)
    rows: list[Row] = []
    for section in sections:
        started = time.perf_counter()
        if section in WHOLE_RUNS:
            rows += WHOLE_RUNS[section](bench)
        else:
            for recipe in recipes:
                rows += PER_RECIPE[section](bench, recipe)
        print(f"[bench] {section}: {time.perf_counter() - started:.0f}s", flush=True)
        write_results(out, rows, size.name, command, load_average)  # partial results survive a crash
        if json_out:
            write_json(json_out, rows, size.name, load_average)
    print(markdown_table(rows))
    return out
