"""Resuming: a real run stopped by SIGTERM after its first epoch continues from there, and the
pieces that keep a resumed run consistent (history trimming, config check, resume=<dir>)."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from runner.errors import ConfigError, RunInterrupted
from runner.record.resume import StopSignals, expand_resume_argument, trim_history
from runner.record.run_folder import check_same_config, read_history, resume_command
from tests.conftest import compose_config, runner_env
from tests.data_fixtures import write_image_folder

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

# The toy BiT run with epochs long enough (~2 s of ~8 ms steps) that the signal sent once the first
# epoch's history row appears lands inside the second epoch.
LONG_EPOCHS = ["steps_per_epoch=250", "log_steps=50"]


def start_runner(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=runner_env(),
    )


def history_rows(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def wait_for_first_epoch(process: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not history_rows(run_dir):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def resumable_run(toy_bit_run) -> list[str]:
    return [*toy_bit_run, *LONG_EPOCHS]


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory, resumable_run):
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    process = start_runner(*resumable_run, f"hydra.run.dir={run_dir}")
    wait_for_first_epoch(process, run_dir)
    process.send_signal(signal.SIGTERM)
    _, stopped_stderr = process.communicate(timeout=300)
    stopped = {
        "returncode": process.returncode, "stderr": stopped_stderr,
        "status": json.loads((run_dir / "status.json").read_text()),
        "history": history_rows(run_dir),
    }
    before_refusal = folder_files(run_dir)
    refused = subprocess.run(  # the same folder with one key changed: refused, nothing written
        [sys.executable, "-m", "runner", *resumable_run, "seed=7", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env=runner_env(), timeout=300,
    )
    stopped["refused"] = refused
    stopped["changed_by_refusal"] = sorted(
        name for name in before_refusal.keys() | folder_files(run_dir).keys()
        if before_refusal.get(name) != folder_files(run_dir).get(name)
    )
    advice = re.search(r"\((python -m runner [^)]*)\)", refused.stderr)
    assert advice, refused.stderr[-2000:]
    started = time.monotonic()
    resumed = subprocess.run(  # the refusal's advice, followed literally
        [sys.executable, *shlex.split(advice.group(1))[1:]], capture_output=True, text=True,
        env=runner_env(), timeout=600,
    )
    stopped["resumed_process_seconds"] = time.monotonic() - started
    return run_dir, stopped, resumed


def folder_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run folder but its lock, by relative path."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def test_a_refused_attempt_changes_nothing_and_its_advice_resumes(stopped_and_resumed):
    _, stopped, resumed = stopped_and_resumed
    assert stopped["refused"].returncode == 2, stopped["refused"].stderr[-2000:]
    assert "seed" in stopped["refused"].stderr
    assert stopped["changed_by_refusal"] == []
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def seconds_between_log_lines(log: str, first: str, last: str) -> float:
    """Seconds from the line holding `first` to the one holding `last` (the log's asctime stamps)."""
    stamps = {}
    for line in log.splitlines():
        for key in (first, last):
            if key in line:
                stamps[key] = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    return (stamps[last] - stamps[first]).total_seconds()


def test_sigterm_stops_cleanly_after_a_step_and_says_how_to_resume(stopped_and_resumed):
    run_dir, stopped, _ = stopped_and_resumed
    assert stopped["returncode"] == 128 + signal.SIGTERM, stopped["stderr"][-3000:]
    assert "Traceback" not in stopped["stderr"]
    # docs/sweeps.md: the current step finishes, then the run stops, saying how to resume.
    assert "SIGTERM received: stopping after the current step" in stopped["stderr"]
    assert f"interrupted after 1 completed epoch(s); resume with: python -m runner resume={run_dir}" \
        in stopped["stderr"]
    # status.json: interrupted, with the epochs completed and the resume command.
    assert stopped["status"]["status"] == "interrupted"
    assert stopped["status"]["resume"] == resume_command(run_dir)  # README: with the resume command
    assert stopped["status"]["epochs_completed"] == 1
    assert stopped["status"]["resume"] == f"python -m runner resume={run_dir}"
    assert [row["epoch"] for row in stopped["history"]] == ["0"]


def test_resumed_run_continues_from_its_last_epoch(stopped_and_resumed, resumable_run):
    run_dir, stopped, resumed = stopped_and_resumed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in resumed.stderr
    rows = history_rows(run_dir)
    assert [row["epoch"] for row in rows] == ["0", "1"]  # appended, no epoch twice
    assert rows[0] == stopped["history"][0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2
    assert metrics["optimizer_steps"] == 500  # 2 epochs x 250 steps: the optimiser state came back
    # wall_seconds adds the stopped attempt's seconds to the resumed attempt's, which lie between
    # its log's "resuming" -> "finished" span and its process's whole life.
    attempt_at_least = seconds_between_log_lines(
        (run_dir / "train.log").read_text(), "resuming after epoch", "finished: val_accuracy"
    )
    earlier = stopped["status"]["wall_seconds"]
    assert earlier + attempt_at_least - 0.05 <= metrics["wall_seconds"]
    assert metrics["wall_seconds"] <= earlier + stopped["resumed_process_seconds"]
    assert metrics["train_loss"] == pytest.approx(float(rows[-1]["loss"]))
    assert metrics["train_accuracy"] == pytest.approx(float(rows[-1]["accuracy"]))
    # resume=<dir> composed the run's own overrides again.
    assert OmegaConf.load(run_dir / ".hydra" / "overrides.yaml") == resumable_run
    assert not (run_dir / "checkpoints" / "backup").exists()


def test_the_best_checkpoint_is_the_best_of_every_attempt(stopped_and_resumed):
    """docs/sweeps.md: the best checkpoint keeps the best val_accuracy of all attempts (the resumed
    attempt's first epoch is saved only if it beats the stopped attempt's)."""
    from runner.evaluate import evaluate_run
    from runner.tools.checkpoint import load_run

    run_dir, _, _ = stopped_and_resumed
    best = max(float(row["val_accuracy"]) for row in history_rows(run_dir))
    assert evaluate_run(load_run(run_dir, "best"))["accuracy"] == pytest.approx(best, abs=1e-6)


def write_history(path: Path, epochs: int) -> None:
    path.write_text("epoch,loss\n" + "".join(f"{e},{1.0 / (e + 1)}\n" for e in range(epochs)))


def test_early_stopping_patience_counts_the_epochs_before_the_resume(tmp_path):
    """Epochs 0-3 ran before the interruption, the best (0.7) at epoch 1: with patience 3, the
    first resumed epoch without a gain must stop training and bring back the best weights."""
    import numpy as np

    from runner.fit.callbacks import ResumableEarlyStopping
    from runner.keras2 import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best_file = tmp_path / "best_weights.h5"
    model.save_weights(best_file)
    best = model.get_weights()
    model.set_weights([w + 1.0 for w in best])  # the weights the backup restored: the last epoch's
    with open(tmp_path / "history.csv", "w") as f:
        f.write("epoch,accuracy,loss,val_accuracy,val_loss\n")
        for epoch, val_accuracy in enumerate([0.5, 0.7, 0.6, 0.6]):
            f.write(f"{epoch},0.5,1.0,{val_accuracy},1.0\n")
    early_stopping = ResumableEarlyStopping(
        tmp_path, best_file, monitor="val_accuracy", mode="max", patience=3, restore_best_weights=True
    )
    early_stopping.set_model(model)
    early_stopping.on_train_begin()
    assert (early_stopping.best, early_stopping.wait) == (0.7, 2)
    np.testing.assert_allclose(model.get_weights()[0], best[0] + 1.0)  # training goes on from here
    early_stopping.on_epoch_end(4, {"val_accuracy": 0.65})
    assert model.stop_training
    early_stopping.on_train_end()
    np.testing.assert_allclose(model.get_weights()[0], best[0])


def test_trim_history_keeps_the_epochs_the_backup_holds(tmp_path):
    history = tmp_path / "history.csv"
    write_history(history, 3)
    with open(history, "a") as f:
        f.write("3,0.2")  # a row cut short by a kill: no newline, but all fields here
    before = history.read_text()
    with open(history) as reader:  # opened before the trim, as a reader or a kill might find it
        trim_history(history, 2)
        # README: rewritten atomically, i.e. a new file renamed over the old one, which stays whole
        assert reader.read() == before
    assert history.read_text() == "epoch,loss\n0,1.0\n1,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]
    trim_history(history, 0)  # a fresh start: nothing of the failed attempt stays
    assert not history.exists()


def test_resuming_with_another_config_is_refused(tmp_path):
    saved = tmp_path / "resume_config.yaml"
    OmegaConf.save(compose_config(["batch_size=16"], tmp_path), saved, resolve=True)
    # docs/sweeps.md: log_steps, logger and optimized_metric may change: they train nothing else.
    check_same_config(compose_config(["batch_size=16", "log_steps=3"], tmp_path), saved)
    check_same_config(compose_config(["batch_size=16", "logger=mlflow"], tmp_path), saved)
    check_same_config(compose_config(["batch_size=16", "optimized_metric=val_loss"], tmp_path), saved)
    with pytest.raises(ConfigError, match=r"batch_size: 16 -> 32.*resume="):
        check_same_config(compose_config(["batch_size=32"], tmp_path), saved)


def test_resume_argument_expands_to_the_runs_overrides(tmp_path):
    run_dir = tmp_path / "batch_size=16,epochs=2"  # a sweep job's folder: '=' and ','
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["batch_size=16", "epochs=2"]), run_dir / ".hydra" / "overrides.yaml")
    argv = expand_resume_argument([f"resume={run_dir}", "log_steps=5"])
    assert argv[:3] == ["batch_size=16", "epochs=2", "log_steps=5"]
    (parsed,) = OverridesParser.create().parse_overrides(argv[3:])  # Hydra's own parser
    assert parsed.key_or_group == "hydra.run.dir" and parsed.value() == str(run_dir)
    assert expand_resume_argument(["epochs=3"]) == ["epochs=3"]
    with pytest.raises(ConfigError, match="not a run folder"):
        expand_resume_argument([f"resume={tmp_path}"])
    with pytest.raises(ConfigError, match="hydra.sweep.dir"):
        expand_resume_argument(["-m", f"resume={run_dir}"])


def test_resume_of_a_folder_that_is_no_run_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "runner", f"resume={tmp_path}"], capture_output=True, text=True,
        env=runner_env(), timeout=60,
    )
    assert result.returncode == 2 and "not a run folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("signal_number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_asks_to_stop_and_a_second_stops_at_once(signal_number, exit_code):
    """Ctrl-C (SIGINT) and SIGTERM alike; the exit code is the shell's 128 + the signal."""
    before = signal.getsignal(signal_number)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal_number)
        time.sleep(0.01)  # Python runs the handler between bytecodes
        assert signals.requested == signal_number
        with pytest.raises(RunInterrupted) as stop:
            os.kill(os.getpid(), signal_number)
            time.sleep(0.01)
        assert stop.value.exit_code == exit_code
    assert signal.getsignal(signal_number) == before


def move_away_after_the_first_epoch(run_dir: Path, folder: Path, away: Path, done: threading.Event) -> None:
    """Renames the image folder away once the run's first epoch is in history.csv: the next epoch,
    which reads the files again (pipeline.cache=false), fails."""
    while not done.is_set() and not read_history(run_dir):
        time.sleep(0.01)
    if not done.is_set():
        folder.rename(away)


@pytest.mark.slow
def test_a_crashed_run_records_failed_and_resumes_from_its_last_epoch(tmp_path, resumable_run):
    """README: an interrupted run (Ctrl-C, SIGTERM, a crash, SIGKILL) resumes from its last
    completed epoch when started again; status.json says `failed`, with the reason. The crash is a
    real one: the image files vanish during the second epoch, and come back for the restart."""
    from runner.train import train

    images, away, run_dir = tmp_path / "images", tmp_path / "away", tmp_path / "run"
    write_image_folder(images, ("cat", "dog"), per_class=20, size=32)
    overrides = [o for o in resumable_run if o != "dataset=digits"] + [
        "dataset=image_folder", f"dataset.path={images}", "pipeline.cache=false"]
    done = threading.Event()
    watcher = threading.Thread(target=move_away_after_the_first_epoch, args=(run_dir, images, away, done))
    watcher.start()
    try:
        with pytest.raises(Exception):  # noqa: B017 - TensorFlow's error for the missing file
            train(compose_config(overrides, run_dir))
    finally:
        done.set()
        watcher.join()
    failed = json.loads((run_dir / "status.json").read_text())
    assert (failed["status"], failed["error"]) == ("failed", "NotFoundError"), failed
    assert str(images) in failed["reason"] and "No such file" in failed["reason"]  # the cause, not
    assert "\n" not in failed["reason"]  # TensorFlow's first line, "Graph execution error:"
    assert [row["epoch"] for row in read_history(run_dir)] == [0]
    away.rename(images)
    metrics = train(compose_config(overrides, run_dir))
    assert "resuming after epoch 1" in (run_dir / "train.log").read_text()
    assert [row["epoch"] for row in read_history(run_dir)] == [0, 1]
    assert metrics["optimizer_steps"] == 500  # 2 epochs x 250 steps: the first one's kept
    assert metrics["wall_seconds"] > failed["wall_seconds"]  # the failed attempt's seconds count


@pytest.mark.parametrize("patience", [None, 2])
def test_an_epoch_is_backed_up_after_its_history_row_checkpoints_and_early_stopping(tmp_path, patience):
    """The order that makes a run resumable anywhere (runner/fit/run_callbacks.py): the history is
    trimmed to the backup before CSVLogger opens it; the checkpoints, the history row and early
    stopping's state are written before the epoch's backup; the signal check comes last."""
    from runner.fit.callbacks import HistoryResume, StepLogger, StopOnSignal
    from runner.fit.run_callbacks import early_stopping, run_callbacks
    from runner.keras2 import keras
    from runner.record.resume import StopSignals
    from runner.record.run_folder import RunFolder
    from runner.record.tracking import NoTracker

    cfg = compose_config([f"model.early_stopping_patience={patience or 'null'}"], tmp_path)
    folder = RunFolder(tmp_path)
    stopping = early_stopping(cfg.model.early_stopping_patience, folder)
    callbacks = run_callbacks(cfg.logger, cfg.device, folder, StepLogger(1, 8, 1), StopSignals(), NoTracker(),
                              stopping)
    kinds = [type(callback) for callback in callbacks]
    api = keras.callbacks  # Keras 2.6 keeps BackupAndRestore under .experimental
    backup_class = getattr(api, "BackupAndRestore", None) or api.experimental.BackupAndRestore
    backup = next(i for i, c in enumerate(callbacks) if isinstance(c, backup_class))
    csv_logger = kinds.index(keras.callbacks.CSVLogger)
    checkpoints = [i for i, c in enumerate(callbacks) if isinstance(c, keras.callbacks.ModelCheckpoint)]
    assert kinds.index(HistoryResume) < csv_logger < backup
    assert len(checkpoints) == 2 and max(checkpoints) < backup
    if stopping is not None:
        assert callbacks.index(stopping) < backup
    assert backup == len(callbacks) - 2 and kinds[-1] is StopOnSignal


def test_a_finished_folder_refuses_another_config_and_stands_for_its_own(tmp_path):
    """Not "nothing to do", exit 0, as if the new config had trained; metrics.json untouched."""
    from runner.train import train

    run_dir = tmp_path / "run"
    cfg = compose_config(["epochs=2"], run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "checkpoints" / "resume_config.yaml", resolve=True)
    metrics = {"val_accuracy": 0.5, "wall_seconds": 3.0}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ConfigError) as caught:
        train(compose_config(["epochs=3", "model.learning_rate=0.5"], run_dir))
    assert "epochs" in str(caught.value) and "model.learning_rate" in str(caught.value)
    assert not (run_dir / "status.json").exists()
    assert train(compose_config(["epochs=2", "log_steps=7"], run_dir)) == metrics  # may change


def test_a_new_run_finds_an_interrupted_run_of_the_same_overrides(tmp_path):
    from runner.record.resume import interrupted_twins

    def run_folder(name: str, overrides: list[str], status: str) -> Path:
        folder = tmp_path / "outputs" / name
        (folder / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
        (folder / "status.json").write_text(json.dumps({"status": status}))
        return folder

    twin = run_folder("2026-12-01/10-00-00-000001", ["epochs=3", "batch_size=8"], "interrupted")
    run_folder("2026-12-01/11-00-00-000001", ["epochs=3", "batch_size=8"], "finished")
    run_folder("2026-12-01/12-00-00-000001", ["epochs=4", "batch_size=8"], "interrupted")
    same = run_folder("2026-12-01/13-00-00-000001", ["batch_size=8", "epochs=3"], "interrupted")  # order
    new = tmp_path / "outputs" / "2026-12-02" / "09-00-00-000001"
    new.mkdir(parents=True)
    assert set(interrupted_twins(new, ["epochs=3", "batch_size=8"])) == {twin.resolve(), same.resolve()}
    assert interrupted_twins(twin, ["epochs=3", "batch_size=8"]) == [same.resolve()]  # not itself
    elsewhere = tmp_path / "mine" / "a" / "run"
    elsewhere.mkdir(parents=True)
    assert interrupted_twins(elsewhere, ["epochs=3", "batch_size=8"]) == []


@pytest.mark.parametrize("saved_epoch", [1, -1])
def test_history_keeps_only_the_epochs_the_backup_holds(tmp_path, saved_epoch):
    """The previous attempt wrote epoch 3's row, then was killed before backing epoch 3 up: the
    resumed attempt trains epoch 3 again, so history.csv keeps epochs 1-2 (none if the backup holds
    none yet). A real Keras 2 backup checkpoint (WorkerTrainingState's epoch variable)."""
    import tensorflow as tf

    from runner.fit.callbacks import HistoryResume

    backup = tmp_path / "checkpoints" / "backup"
    tf.train.Checkpoint(ckpt_saved_epoch=tf.Variable(saved_epoch, dtype=tf.int64)).save(
        str(backup / "chief" / "chief"))
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.0\n1,0.8\n2,0.6\n")
    HistoryResume(backup, history).on_train_begin()
    assert [row["epoch"] for row in read_history(tmp_path)] == list(range(saved_epoch + 1))


def test_a_run_folder_copied_elsewhere_is_the_same_run(tmp_path):
    """Paths under the run folder (${output_dir}/overflow, ...) follow the folder: a copied sweep
    folder run again skips its finished jobs instead of refusing them."""
    saved = tmp_path / "resume_config.yaml"
    OmegaConf.save(compose_config(["batch_size=16"], tmp_path / "first" / "run"), saved, resolve=True)
    check_same_config(compose_config(["batch_size=16"], tmp_path / "copy" / "run"), saved, finished=True)
    with pytest.raises(ConfigError):
        check_same_config(compose_config(["batch_size=16", f"debug.overflow.path={tmp_path}/elsewhere"],
                                         tmp_path / "copy" / "run"), saved, finished=True)
