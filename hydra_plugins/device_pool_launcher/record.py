"""The device pool's record of a sweep: `<sweep dir>/device_pool.jsonl`, one JSON object per job
process that ended (its job number, overrides, device, pid, cores, exit code, how it ended, when
the sweep gave and took back the device, and its job folder relative to the sweep folder).

The public way to read it, for tools that report on a sweep (the runner's summary names each
job's device). Standard library only: importing this imports neither Hydra nor TensorFlow.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD_FILE = "device_pool.jsonl"  # in the sweep folder


def append_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    """One line per write, so that readers only ever see whole lines (or a last one cut short by
    a kill, which read_records skips)."""
    with open(Path(sweep_dir) / RECORD_FILE, "a") as file:
        file.write(json.dumps(record) + "\n")


def read_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's records in the order their jobs ended (a job re-run by a later command in the
    same sweep folder appears again, later); empty for a sweep that ran on another launcher."""
    path = Path(sweep_dir) / RECORD_FILE
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return records
