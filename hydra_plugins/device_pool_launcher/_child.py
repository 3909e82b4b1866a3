"""One job of a device-pool sweep, in its own process:
`python -m hydra_plugins.device_pool_launcher._child <job file> <result file>`.

The order matters: first tie this process's life to the sweep's, then pin the cores (CPU pools),
and only then unpickle the job, whose task imports TensorFlow when it runs. The result file gets
the job's JobReturn (as Hydra's run_job made it) and what this process saw of its device.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from hydra_plugins.device_pool_launcher.devices import CPUS_ENV

PARENT_ENV = "DEVICE_POOL_PARENT_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_the_sweep() -> None:
    """SIGTERM when the sweep process dies, even by SIGKILL: no job outlives its sweep. (The jobs
    run in a session of their own, so a terminal's Ctrl-C reaches the sweep alone, which passes
    it on once.)"""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get(PARENT_ENV, str(os.getppid())):
        sys.exit(143)  # the sweep died before prctl took effect


def _interrupt(signal_number: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C until the task installs its own handler (the runner's training does):
    the job then records that it was interrupted instead of vanishing."""
    raise KeyboardInterrupt(signal_number)


def _pin_cores() -> list[int] | None:
    cores = os.environ.get(CPUS_ENV)
    if not cores:
        return None
    os.sched_setaffinity(0, {int(core) for core in cores.split(",")})
    return sorted(os.sched_getaffinity(0))


def _threads_cores() -> list[int]:
    """The cores any thread of this process may run on now (TensorFlow's pools included)."""
    cores: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            cores |= os.sched_getaffinity(int(task.name))
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(cores)


def run(job_file: Path, result_file: Path) -> None:
    _die_with_the_sweep()
    signal.signal(signal.SIGTERM, _interrupt)
    record: dict[str, Any] = {"pid": os.getpid(), "affinity": _pin_cores(), "process_started": time.time()}
    job_return = None
    try:
        import cloudpickle  # after the pinning: unpickling imports the task's modules

        job = cloudpickle.loads(job_file.read_bytes())
        job_return = _run_job(record, **job)
    finally:
        record.update(process_ended=time.time(), threads_affinity=_threads_cores())
        _write(result_file, {"job_return": job_return, "record": record})


def _run_job(record: dict[str, Any], hydra_context: Any, sweep_config: Any, task_function: Any,
             singleton_state: Any) -> Any:
    """What Hydra's joblib and submitit launchers do in their workers; the job's folder goes into
    the record first, so that a job stopped before it returns is recorded with its folder too."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    sweep = sweep_config.hydra.sweep
    record["run_dir"] = os.path.abspath(os.path.join(str(sweep.dir), str(sweep.subdir)))  # as run_job
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def _write(result_file: Path, result: dict[str, Any]) -> None:
    """Atomically: the sweep reads the file once this process has exited."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(result)
    except Exception as error:  # an exception or value that does not pickle: say what it was
        job_return = result["job_return"]
        if job_return is not None:
            job_return.return_value = RuntimeError(f"unpicklable job result: {error}")
        data = cloudpickle.dumps(result)
    partial = result_file.with_suffix(".tmp")
    partial.write_bytes(data)
    partial.replace(result_file)


def _exit_without_teardown(code: int | str | None) -> NoReturn:
    """End as Python's own exit does (threading's exit hooks, non-daemon threads joined, atexit's
    handlers: logging's and the task's, TensorFlow's among them; streams flushed; a str code
    printed, status 1), less the interpreter's teardown of every object left. That teardown frees
    a job's TensorFlow graphs one by one, seconds after its result is written (tens under load),
    and the device is the job's until its process ends. Both calls are what CPython's exit runs,
    in its order (private, present in CPython 3.7-3.13)."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()  # type: ignore[attr-defined]
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    try:
        run(Path(sys.argv[1]), Path(sys.argv[2]))
    except SystemExit as stop:  # a task stopped by a signal (sys.exit(143)): its result is written
        _exit_without_teardown(stop.code)
    _exit_without_teardown(0)
