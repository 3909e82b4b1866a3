"""Which process of a multi-process run this is, read from the environment as launchers set it.

Ascend multi-card scripts start one process per card with RANK_SIZE, RANK_ID and RANK_TABLE_FILE;
TensorFlow's MultiWorkerMirroredStrategy reads TF_CONFIG. Both reduce to a rank and a size here.
No TensorFlow: config checks call this before TensorFlow is imported.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ConfigError

NPU_RANK_VARIABLES = ("RANK_SIZE", "RANK_ID", "RANK_TABLE_FILE")


@dataclass(frozen=True)
class Worker:
    rank: int = 0
    size: int = 1

    @property
    def is_chief(self) -> bool:
        """Rank 0 writes the checkpoints and the run's metrics; the others write beside it."""
        return self.rank == 0


def current_worker(device_cfg: Any) -> Worker:
    """This process's rank among the run's processes; ConfigError naming a missing or bad variable."""
    if device_cfg.type == "npu" and device_cfg.num_devices > 1:
        return _npu_worker(device_cfg.num_devices)
    if device_cfg.multi_worker:
        return _tf_config_worker()
    return Worker()


def worker_run_dir(run_dir: Path, device_cfg: Any) -> Path:
    """run_dir for the chief, run_dir/rank_<id> for every other process.

    Lenient on purpose: a bad environment is reported by check_config, whose message must land
    in a train.log, so this falls back to the chief's folder instead of raising.
    """
    try:
        worker = current_worker(device_cfg)
    except ConfigError:
        return run_dir
    return run_dir if worker.is_chief else run_dir / f"rank_{worker.rank}"


def _npu_worker(num_devices: int) -> Worker:
    missing = [name for name in NPU_RANK_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"device.num_devices={num_devices} runs one process per NPU, each started with "
            f"RANK_SIZE, RANK_ID and RANK_TABLE_FILE set; {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Export RANK_SIZE={num_devices}, "
            "RANK_ID=<0..RANK_SIZE-1> and RANK_TABLE_FILE=<the cluster's rank table .json> in "
            "each process (as the Ascend train_full_8p.sh scripts do), or use device.num_devices=1."
        )
    size, rank = _int_variable("RANK_SIZE"), _int_variable("RANK_ID")
    if size != num_devices or not 0 <= rank < size:
        raise ConfigError(
            f"RANK_SIZE={size} and RANK_ID={rank} do not fit device.num_devices={num_devices}: "
            f"RANK_SIZE must equal device.num_devices and RANK_ID lie in 0..{num_devices - 1}."
        )
    table = os.environ["RANK_TABLE_FILE"]
    if not Path(table).is_file():
        raise ConfigError(
            f"RANK_TABLE_FILE={table} is not a file: point it at the cluster's rank table "
            "(the JSON hccl_tools.py writes), as the Ascend multi-card scripts do."
        )
    return Worker(rank=rank, size=size)


def _int_variable(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} must be an integer, e.g. {name}=0.") from None


def _tf_config_worker() -> Worker:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "device.multi_worker=true needs TF_CONFIG in each worker's environment, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\'. Set it, or use device.multi_worker=false.'
        )
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        chiefs = cluster.get("chief", [])
        rank = int(task["index"]) + (len(chiefs) if task["type"] == "worker" else 0)
        size = len(chiefs) + len(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"TF_CONFIG={raw!r} is not a valid cluster description ({error}): it must be JSON "
            'with "cluster" (lists of host:port per role) and "task" ({"type": ..., "index": ...}).'
        ) from None
    return Worker(rank=rank, size=size)
