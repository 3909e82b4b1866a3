"""Section 7: one 4-job sweep under three launchers on this machine's two cores, side by side:
the basic launcher (jobs one after another in one process), joblib with two workers (two jobs at
once, neither pinned) and the device pool on core sets [0] and [1] (two jobs at once, one core
each). Whole `python -m runner -m` commands, launch to exit, alternating in each round."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from bench.rates import median
from bench.report import Row
from bench.startup import wall_seconds

JOBS = "seed=1,2,3,4"
LAUNCHERS = {  # label -> overrides
    "basic": [],
    "joblib n_jobs=2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "device_pool [[0],[1]]": ["hydra/launcher=device_pool", "hydra.launcher.devices=[[0],[1]]"],
}
POOL = "device_pool [[0],[1]]"


def sweep_seconds(work_dir: Path, run: tuple[str, ...], launcher: list[str]) -> float:
    """Wall time of the sweep in a new sweep folder (a re-used one would skip finished jobs)."""
    sweep_dir = Path(tempfile.mkdtemp(prefix="sweep-", dir=work_dir))
    return wall_seconds([sys.executable, "-m", "runner", "-m", *run, JOBS, *launcher,
                         f"hydra.sweep.dir={sweep_dir}"])


def launcher_rows(work_dir: Path, run: tuple[str, ...], rounds: int) -> list[Row]:
    walls: dict[str, list[float]] = {label: [] for label in LAUNCHERS}
    for turn in range(rounds):
        order = list(LAUNCHERS)[turn % len(LAUNCHERS):] + list(LAUNCHERS)[:turn % len(LAUNCHERS)]
        for label in order:  # a different launcher first each round: load drifts
            walls[label].append(sweep_seconds(work_dir, run, LAUNCHERS[label]))
            print(f"[bench] launchers: {label} {walls[label][-1]:.1f}s", flush=True)
    what = f"4 jobs ({JOBS}) of python -m runner {' '.join(run)}, {os.cpu_count()} cores, launch to exit"
    rows = [Row("7 launchers", "resizer", f"{label}: wall", median(walls[label]), "s", what,
                tuple(walls[label])) for label in LAUNCHERS]
    for label in LAUNCHERS:
        if label != POOL:
            ratios = [other / pool for other, pool in zip(walls[label], walls[POOL])]
            rows.append(Row("7 launchers", "resizer", f"device_pool speed-up over {label}",
                            median(ratios), "ratio", f"{label}'s wall / the pool's, per round: "
                            + ", ".join(f"{r:.2f}" for r in ratios), tuple(ratios)))
    return rows
