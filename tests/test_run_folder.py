"""One writer per run folder, what readers make of a run killed outright, and output folders that
cannot be written. Real processes throughout: a real `python -m runner` holds a job folder while a
second command and a re-launched sweep try it, then is SIGKILLed."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runner.errors import ConfigError
from runner.record.lock import LOCK_FILE, RunFolderBusy, hold_run_folder, lock_holder
from runner.record.resume import expand_resume_argument
from runner.record.run_folder import RunFolder, current_status, resume_command
from tests.conftest import CONF_DIR, compose_config, runner_env

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

HOLD_SCRIPT = (
    "import sys, time\nfrom pathlib import Path\nfrom runner.record.lock import hold_run_folder\n"
    "with hold_run_folder(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n"
)


def start_holder(run_dir: Path) -> subprocess.Popen:
    """Another process holding run_dir's lock (returns once it holds it)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(run_dir)],
                               stdout=subprocess.PIPE, text=True, env=runner_env())
    assert process.stdout.readline().strip() == "held"
    return process


def kill(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=60)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_a_lock_held_by_another_process_refuses_and_a_dead_ones_is_taken_over(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(RunFolderBusy) as busy, hold_run_folder(tmp_path):
            pass
        message = str(busy.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(tmp_path) in message and "\n" not in message
        assert lock_holder(tmp_path).pid == holder.pid
    finally:
        kill(holder)  # SIGKILL: the kernel releases its lock; its pid stays in the file
    record = json.loads((tmp_path / LOCK_FILE).read_text())  # README: pid, host and start time
    assert (record["pid"], record["host"]) == (holder.pid, socket.gethostname())
    assert datetime.fromisoformat(record["since"]) <= datetime.now()
    assert lock_holder(tmp_path) is None
    with hold_run_folder(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with hold_run_folder(tmp_path):  # python -m runner holds it around train(), which does too
            assert lock_holder(tmp_path).pid == os.getpid()


def test_a_running_status_without_a_live_process_reads_as_interrupted(tmp_path):
    holder = start_holder(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "pid": holder.pid}))
    try:
        running = current_status(tmp_path)
        assert running["status"] == "running" and f"pid {holder.pid}" in running["holder"]
    finally:
        kill(holder)
    interrupted = current_status(tmp_path)
    assert interrupted["status"] == "interrupted"
    assert f"pid {holder.pid}" in interrupted["reason"] and "killed" in interrupted["reason"]
    assert interrupted["resume"] == f"python -m runner resume={tmp_path}"
    (tmp_path / LOCK_FILE).unlink()  # a folder from before run.lock existed: no lock, no process
    assert current_status(tmp_path)["status"] == "interrupted"


def unwritable_folders(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a_file").write_text("")
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    # root writes through any mode bits: /sys refuses even root.
    no_permission = Path("/sys/runner-test") if os.geteuid() == 0 else read_only / "run"
    return {"proc": Path("/proc/runner-test"), "through a file": tmp_path / "a_file" / "run",
            "no permission": no_permission}


@pytest.mark.parametrize("case", ["proc", "through a file", "no permission"])
def test_an_output_folder_that_cannot_be_written_is_one_paragraph(case, tmp_path):
    folder = unwritable_folders(tmp_path)[case]
    result = subprocess.run([sys.executable, "-m", "runner", f"hydra.run.dir={folder}"],
                            capture_output=True, text=True, env=runner_env(), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"Cannot write the output folder {folder}" in line and "hydra.run.dir=<" in line


def test_a_sweep_folder_that_cannot_be_written_is_one_paragraph():
    """README: hydra.sweep.dir too stops before Hydra creates the folder: one paragraph, exit 2."""
    folder = Path("/proc/runner-test-sweep")
    result = subprocess.run([sys.executable, "-m", "runner", "-m", "batch_size=16,32",
                             f"hydra.sweep.dir={folder}"], capture_output=True, text=True,
                            env=runner_env(), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"Cannot write the output folder {folder}" in line and "hydra.sweep.dir=<" in line


def test_train_refuses_an_output_dir_that_cannot_be_written(tmp_path, compose_cfg):
    from runner.train import train

    with pytest.raises(ConfigError, match="Cannot write the output folder /proc/runner-test"):
        train(compose_cfg([], Path("/proc/runner-test")))


# --- Two real processes on one run folder, and a sweep re-launched beside them ---------------

def job_folder_name(overrides: list[str]) -> str:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return cfg.hydra.job.override_dirname


def read_status_of(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def summary_rows(sweep_dir: Path) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "summary.csv") as f:
        return {row["model.crop_size"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def held_job(tmp_path_factory, toy_bit_run):
    """A real run (A) in the folder of a sweep job, frozen with SIGSTOP once it holds the folder and
    says `running`; while it holds it, the same command again (C) and a sweep over that job and a
    bad one (B); then A is SIGKILLed and the sweep folder summarized."""
    sweep_dir = tmp_path_factory.mktemp("held")
    fixed = [o for o in toy_bit_run if not o.startswith("model.crop_size=")]
    run_dir = sweep_dir / job_folder_name([*fixed, "model.crop_size=24"])
    command = [sys.executable, "-m", "runner", *fixed, "model.crop_size=24"]
    first = subprocess.Popen([*command, f"hydra.run.dir='{run_dir}'"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=runner_env())
    try:
        deadline = time.monotonic() + 120
        while read_status_of(run_dir).get("pid") != first.pid:
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never said it was running"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # alive, holding the lock, writing nothing
        running = read_status_of(run_dir)
        before = snapshot(run_dir)
        second = subprocess.run([*command, f"hydra.run.dir='{run_dir}'"], capture_output=True,
                                text=True, env=runner_env(), timeout=120)
        sweep = subprocess.run(
            [sys.executable, "-m", "runner", "-m", *fixed, "model.crop_size=24,64",
             f"hydra.sweep.dir={sweep_dir}"], capture_output=True, text=True, env=runner_env(),
            timeout=120,
        )
        after = snapshot(run_dir)
        held_rows = summary_rows(sweep_dir)
    finally:
        kill(first)
    summarized = subprocess.run([sys.executable, "-m", "runner.summarize", str(sweep_dir)],
                                capture_output=True, text=True, env=runner_env(), timeout=120)
    return {"run_dir": run_dir, "pid": first.pid, "running": running, "second": second, "sweep": sweep,
            "unchanged": before == after, "held_rows": held_rows, "summarized": summarized,
            "killed_rows": summary_rows(sweep_dir)}


def test_a_running_run_says_so_with_its_pid_and_host(held_job):
    """docs/sweeps.md: status.json says `running` (with the pid and host) while a run trains."""
    running = held_job["running"]
    assert (running["status"], running["pid"], running["host"]) == (
        "running", held_job["pid"], socket.gethostname())


def test_a_second_process_on_a_held_folder_stops_at_once_naming_the_holder(held_job):
    second = held_job["second"]
    assert second.returncode == 2 and "Traceback" not in second.stderr
    (line,) = [line for line in second.stderr.splitlines() if "[ERROR]" in line]
    assert f"The run folder {held_job['run_dir']} is in use: pid {held_job['pid']} on host " \
           f"{socket.gethostname()}" in line
    assert "Wait for that run to end" in line and "another hydra.run.dir" in line
    assert held_job["unchanged"]  # neither the second command nor the sweep wrote into it


def test_a_sweep_beside_a_running_job_skips_it_and_says_so(held_job):
    sweep, rows = held_job["sweep"], held_job["held_rows"]
    assert sweep.returncode == 1, sweep.stderr[-3000:]
    assert "job skipped: The run folder" in sweep.stderr
    assert rows["24"]["status"] == "running"
    assert f"held by pid {held_job['pid']} on host" in rows["24"]["reason"]
    assert "skips it" in rows["24"]["reason"]
    assert rows["64"]["status"] == "failed"  # the sweep went on to its other job


def test_the_summary_shows_the_killed_job_as_interrupted_with_the_resume_command(held_job):
    """README: runs killed outright leave status.json at `running` (pid, host); the summary shows
    such a run, whose lock is free, as interrupted, with the pid that is gone and the command."""
    left = json.loads((held_job["run_dir"] / "status.json").read_text())
    assert (left["status"], left["pid"], left["host"]) == ("running", held_job["pid"], socket.gethostname())
    assert held_job["summarized"].returncode == 0, held_job["summarized"].stderr[-3000:]
    row = held_job["killed_rows"]["24"]
    assert row["status"] == "interrupted"
    assert f"pid {held_job['pid']} on {socket.gethostname()} is gone" in row["reason"]
    assert row["reason"].endswith(f"resume with: {resume_command(held_job['run_dir'])}")
    assert "| interrupted |" in held_job["summarized"].stdout


# --- a full disk: a real one, a small tmpfs filled up (mounting needs root, as CI has) ----------

@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB file system; `fill()` takes its last byte, `free()` gives the space back."""
    import errno as errnos

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    ).returncode == 0
    if not mounted:
        pytest.skip("a full disk is made with a small tmpfs, which only root can mount")

    class Disk:
        path = disk
        filler = disk / "filler"

        def fill(self):
            with open(self.filler, "ab", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError as error:
                    assert error.errno == errnos.ENOSPC

        def free(self):
            self.filler.unlink()

    try:
        yield Disk()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_json_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(small_disk):
    import errno

    from runner.record.run_folder import write_json_atomic

    status = small_disk.path / "status.json"
    write_json_atomic(status, {"status": "running"})
    small_disk.fill()
    with pytest.raises(OSError) as caught:
        write_json_atomic(status, {"status": "failed", "reason": "x" * 10_000})
    assert caught.value.errno == errno.ENOSPC
    assert json.loads(status.read_text()) == {"status": "running"}
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler", "status.json"]


def test_a_full_disk_fails_the_run_with_its_path_and_is_recorded_once_there_is_space(small_disk, caplog):
    import errno

    from runner.record.run_folder import RunFolder, read_status

    folder = RunFolder(small_disk.path / "run")
    folder.path.mkdir()
    folder.record_running()
    small_disk.fill()
    error = OSError(errno.ENOSPC, "No space left on device", str(folder.path / "history.csv"))
    with caplog.at_level("ERROR"):
        reason = folder.record_failure(error)  # status.json cannot be written either: no raise
    assert str(folder.path) in reason and "28" in reason
    assert read_status(folder.path)["status"] == "running"
    assert any("status.json" in r.getMessage() for r in caplog.records)  # the console says so
    assert not [r for r in caplog.records if r.exc_info]  # a paragraph, no traceback
    assert not list(folder.path.glob("*.tmp"))
    small_disk.free()
    folder.record_failure(error)
    assert read_status(folder.path)["status"] == "failed"
    assert str(folder.path) in read_status(folder.path)["reason"]


def test_a_checkpoint_on_a_full_disk_leaves_the_last_good_one_whole(small_disk):
    from runner.fit.callbacks import AtomicModelCheckpoint
    from runner.keras2 import keras

    model = keras.Sequential([keras.layers.Dense(64, input_shape=(64,))])  # ~17 KB of weights
    last = small_disk.path / "last_weights.h5"
    checkpoint = AtomicModelCheckpoint(str(last), save_weights_only=True)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {})
    good = last.read_bytes()
    small_disk.fill()
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    with pytest.raises(Exception):  # noqa: B017 - h5py's error type differs between versions
        checkpoint.on_epoch_end(1, {})
    assert last.read_bytes() == good
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler", "last_weights.h5"]


def test_summarize_on_a_full_disk_says_so_in_a_paragraph(small_disk, capsys):
    from runner.record.sweep_summary import main

    job = small_disk.path / "sweep" / "seed=1"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (job / "status.json").write_text('{"status": "interrupted"}')
    small_disk.fill()
    assert main([str(small_disk.path / "sweep")]) == 2
    error = capsys.readouterr().err
    assert str(small_disk.path / "sweep") in error and "Traceback" not in error
    assert (job / "status.json").read_text() == '{"status": "interrupted"}'


def test_a_new_attempts_clock_goes_on_from_the_last_recorded_seconds(tmp_path):
    """A resumed run's wall_seconds are every attempt's; interrupted, failed or killed alike."""
    from runner.record.run_folder import RunFolder, write_status

    for status in ("interrupted", "failed", "running"):
        write_status(tmp_path, status, wall_seconds=100.0)
        folder = RunFolder(tmp_path)
        folder.start_attempt()
        assert 100.0 <= folder.clock.seconds < 100.0 + 60  # no machine is that slow
        folder.record_running()
        assert 100.0 <= json.loads((tmp_path / "status.json").read_text())["wall_seconds"] < 160.0
    (tmp_path / "status.json").unlink()
    fresh = RunFolder(tmp_path)
    fresh.start_attempt()
    assert fresh.clock.seconds < 60.0


def recorded_run(run_dir: Path, overrides: list[str], status: str, backup_epochs: int = 0) -> None:
    """A run folder as an attempt under these overrides leaves it: .hydra/, status.json, history,
    the config its backup trained with, and a real Keras-format backup of `backup_epochs` epochs."""
    cfg = compose_config(overrides, run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml", resolve=True)
    (run_dir / "status.json").write_text(json.dumps({"status": status}))
    (run_dir / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (run_dir / "checkpoints").mkdir()
    OmegaConf.save(cfg, run_dir / "checkpoints" / "resume_config.yaml", resolve=True)
    if backup_epochs:
        import tensorflow as tf

        epoch = tf.Variable(backup_epochs - 1, dtype=tf.int64)
        tf.train.Checkpoint(ckpt_saved_epoch=epoch).save(str(run_dir / "checkpoints/backup/chief/chief"))


def test_an_interrupted_folder_given_another_config_is_left_as_it_was_and_its_advice_resumes(tmp_path):
    """The fast twin of test_resume's stopped run: a real backup of one epoch, another epochs=."""
    from runner.train import train

    recorded_run(tmp_path, ["epochs=2", "batch_size=16"], "interrupted", backup_epochs=1)
    before = snapshot(tmp_path)
    hydra_cfg = compose_config(["epochs=3", "batch_size=16"], tmp_path, with_hydra=True).hydra
    with pytest.raises(ConfigError, match="epochs: 2 -> 3") as refusal:
        train(compose_config(["epochs=3", "batch_size=16"], tmp_path), hydra_cfg)
    assert "batch_size" not in str(refusal.value)  # only the keys that differ
    after = snapshot(tmp_path)
    after.pop(LOCK_FILE)  # the lock's own file: the attempt held the folder while it looked
    assert after == before  # config files, status, history: not a byte rewritten
    command = shlex.split(re.search(r"python -m runner [^)]+", str(refusal.value)).group())
    argv = expand_resume_argument(command[3:])  # the advice, followed literally
    assert argv[-1].startswith("hydra.run.dir=")
    RunFolder(tmp_path).refuse_other_config(compose_config(argv[:-1], tmp_path), finished=False)
