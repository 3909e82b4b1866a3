"""DevicePoolLauncher: Hydra's side of the pool (the jobs' configs, their JobReturns); the
scheduling is in _pool.py, a job's process in _child.py."""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.device_pool_launcher._pool import DevicePool, Job, Outcome
from hydra_plugins.device_pool_launcher.devices import DevicePoolError, form_pool

log = logging.getLogger(__name__)


class DevicePoolLauncher(Launcher):
    def __init__(self, device_type: str = "cpu", devices: Sequence[Any] | None = None,
                 jobs_per_device: int = 1, stagger_seconds: float = 0.0,
                 stop_timeout_seconds: float = 120.0, **computed: Any) -> None:
        self.device_type, self.devices = device_type, devices
        self.jobs_per_device, self.stagger_seconds = jobs_per_device, stagger_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        with _no_empty_sweep_folder(Path(str(config.hydra.sweep.dir))):
            self.pool = form_pool(self.device_type, self.devices)  # a bad pool stops before any job

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        with _no_empty_sweep_folder(sweep_dir):
            jobs = [self._job(initial_job_idx + index, overrides)
                    for index, overrides in enumerate(job_overrides)]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("device pool: %d job(s) on %s, %d job(s) per device", len(jobs),
                 " ".join(device.label for device in self.pool), self.jobs_per_device)
        pool = DevicePool(self.pool, self.jobs_per_device, self.stagger_seconds,
                          self.stop_timeout_seconds, sweep_dir)
        singleton_state = Singleton.get_state()
        outcomes = pool.run(jobs, lambda job: self._pickled(job, singleton_state))
        return [_job_return(job, outcomes[job.number]) for job in jobs]

    def _job(self, number: int, overrides: Sequence[str]) -> Job:
        """The job's config, composed here as Hydra's own launchers compose it in their workers."""
        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{number}"
            sweep_config.hydra.job.num = number
        self._check_device_id(sweep_config)
        return Job(number, list(overrides), sweep_config)

    def _check_device_id(self, sweep_config: DictConfig) -> None:
        """On the NPU the pool hands each job its card through ASCEND_DEVICE_ID, which the
        runner's device.id overrides: a set device.id would put every job on that one card."""
        device_id = OmegaConf.select(sweep_config, "device.id", default=None)
        if self.device_type == "npu" and device_id is not None:
            raise DevicePoolError(
                f"device.id={device_id} with hydra/launcher=device_pool would run every job on NPU "
                f"{device_id}: leave device.id null (each job then opens the card the pool gives it, "
                "as ASCEND_DEVICE_ID) and list the cards in hydra.launcher.devices."
            )

    def _pickled(self, job: Job, singleton_state: Any) -> bytes:
        import cloudpickle  # by value: the task function lives in `python -m runner`'s __main__

        return cloudpickle.dumps({"hydra_context": self.hydra_context, "sweep_config": job.payload,
                                  "task_function": self.task_function,
                                  "singleton_state": singleton_state})


@contextmanager
def _no_empty_sweep_folder(sweep_dir: Path) -> Iterator[None]:
    """A sweep the pool refuses leaves no sweep folder behind that holds nothing but Hydra's
    multirun.yaml (the sweeper writes it, a callback may have made the folder, before launching)."""
    try:
        yield
    except DevicePoolError:
        if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml"}:
            with suppress(OSError):
                (sweep_dir / "multirun.yaml").unlink()
            with suppress(OSError):
                sweep_dir.rmdir()
        raise


def _job_return(job: Job, outcome: Outcome) -> JobReturn:
    """The job's own JobReturn; for a process that died without one (killed, out of memory), a
    completed job that returned None: the runner's mark of a failed job (its folder says the
    rest), so the sweep goes on as it does for any failed job."""
    if outcome.job_return is not None:
        return outcome.job_return
    hydra_cfg = job.payload
    return JobReturn(overrides=job.overrides, hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED,
                     _return_value=None, task_name=str(hydra_cfg.hydra.job.name))
