"""Devices other than the NPU: rank discovery, precision policies, GPUs, two CPU workers."""

import json
import logging
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from runner.device.precision import policy_for
from runner.device.workers import Worker, current_worker, worker_run_dir
from runner.errors import ConfigError
from tests.conftest import TINY_RUN, compose_config, runner_env, wait_for_all

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def tf_config(workers, index, role="worker"):
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": role, "index": index}})


# docs/devices.md's precision table, row by row: the modes and the Keras policy on a GPU.
GPU_POLICY = {
    "force_fp32": "float32", "must_keep_origin_dtype": "float32",
    "allow_mix_precision": "mixed_float16", "allow_mix_precision_fp16": "mixed_float16",
    "allow_fp32_to_fp16": "mixed_float16", "force_fp16": "mixed_float16",
    "cube_fp16in_fp32out": "mixed_float16",
    "allow_mix_precision_bf16": "mixed_bfloat16", "allow_fp32_to_bf16": "mixed_bfloat16",
}


@pytest.mark.parametrize("mode", sorted(GPU_POLICY))
def test_precision_mode_to_keras_policy(mode, caplog):
    """On a GPU the nearest Keras policy; on the NPU float32 (the NPU applies precision_mode
    itself); on a CPU float32, saying so in the log when the mode asks for less (no fp16/bf16
    hardware: see docs/devices.md)."""
    assert compose_config([f"precision={mode}"]).precision.mode == mode  # the group has the mode
    assert policy_for(mode, "gpu") == GPU_POLICY[mode]
    assert policy_for(mode, "npu") == "float32"
    with caplog.at_level(logging.INFO, logger="runner.device.precision"):
        assert policy_for(mode, "cpu") == "float32"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and mode in r.getMessage()]
    assert bool(warned) == (GPU_POLICY[mode] != "float32")


def test_gpu_memory_grows_unless_told_to_reserve_it():
    """docs/devices.md: memory growth on by default (device.memory_growth=false reserves all)."""
    assert compose_config(["device=gpu"]).device.memory_growth is True


def test_tf_config_gives_rank_and_size(tmp_path, monkeypatch):
    device = compose_config(["device.multi_worker=true"], tmp_path).device
    monkeypatch.setenv("TF_CONFIG", tf_config(["a:1", "b:2", "c:3"], 2))
    assert current_worker(device) == Worker(rank=2, size=3)
    assert worker_run_dir(tmp_path, device) == tmp_path / "rank_2"
    chief = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(chief))
    assert current_worker(device) == Worker(rank=0, size=2)
    assert worker_run_dir(tmp_path, device) == tmp_path
    # With a chief, workers count after it: worker 0 is rank 1, not a second rank 0.
    cluster = {"chief": ["a:1"], "worker": ["b:2", "c:3"]}
    ranks = []
    for index in (0, 1):
        task = {"type": "worker", "index": index}
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        ranks.append(current_worker(device))
    assert ranks == [Worker(rank=1, size=3), Worker(rank=2, size=3)]
    assert worker_run_dir(tmp_path, device) == tmp_path / "rank_2"


@pytest.mark.parametrize("value,message", [
    (None, "needs TF_CONFIG"), ("{not json", "not a valid cluster"), ('{"task": {}}', "not a valid"),
])
def test_bad_tf_config_is_a_config_error(value, message, tmp_path, monkeypatch):
    device = compose_config(["device.multi_worker=true"], tmp_path).device
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if value is not None:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ConfigError, match=message):
        current_worker(device)


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
def test_gpu_run_mirrors_every_gpu_in_mixed_float16(tmp_path):
    from runner.train import train

    overrides = [*TINY_RUN, "epochs=1", "device=gpu", "precision=allow_mix_precision"]
    metrics = train(compose_config(overrides, tmp_path / "run"))
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["device"]["strategy"] == "MirroredStrategy"
    assert env["device"]["replicas"] == len(tf.config.list_physical_devices("GPU"))
    assert metrics["precision_policy"] == "mixed_float16" and metrics["DeviceType"] == "gpu"
    assert all(tf.config.experimental.get_memory_growth(g) for g in tf.config.list_physical_devices("GPU"))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_input_is_split_by_element_not_by_file(tmp_path):
    """A TFDS split of one tfrecord file cannot be split by file over two workers."""
    from runner.fit.datasets import build_splits, load_source

    policy = tf.data.experimental.AutoShardPolicy
    for multi_worker, expected in ((True, policy.DATA), (False, policy.AUTO)):
        cfg = compose_config([*TINY_RUN, f"device.multi_worker={multi_worker}"], tmp_path)
        splits = build_splits(cfg, load_source(cfg.dataset, cfg.seed), drop_remainder=False)
        for split in (splits.train, splits.val):
            assert split.options().experimental_distribute.auto_shard_policy == expected


def test_two_workers_on_loopback_train_together(tmp_path, toy_bit_run):
    """MultiWorkerMirroredStrategy from TF_CONFIG, two real processes; only the chief checkpoints."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    run_dir = tmp_path / "run"
    args = [*toy_bit_run, "epochs=1", "device.multi_worker=true", f"hydra.run.dir={run_dir}"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "runner", *args], env={**runner_env(), "TF_CONFIG": tf_config(workers, i)},
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"worker{i}.err", "w"),
        )
        for i in range(2)
    ]
    codes = wait_for_all(processes, timeout=420)
    assert codes == [0, 0], (tmp_path / "worker1.err").read_text()[-3000:]
    chief = json.loads((run_dir / "metrics.json").read_text())
    other = json.loads((run_dir / "rank_1" / "metrics.json").read_text())
    env = json.loads((run_dir / "env.json").read_text())
    # TensorFlow's own name for tf.distribute.MultiWorkerMirroredStrategy
    assert env["device"]["strategy"] == "CollectiveAllReduceStrategy" and env["device"]["replicas"] == 2
    assert chief["RankSize"] == 2 and chief["CaseName"] == "bit_bs16_2p_acc"
    assert chief["train_loss"] == pytest.approx(other["train_loss"])  # one model, trained together
    assert (run_dir / "checkpoints" / "last_weights.h5").is_file()
    assert not list((run_dir / "rank_1").rglob("*_weights.h5"))
    # docs/devices.md: every other rank writes its own train.log and history.csv in rank_<id>/.
    assert (run_dir / "rank_1" / "train.log").is_file() and (run_dir / "rank_1" / "history.csv").is_file()


def test_a_precision_the_cpu_does_not_honour_is_a_warning_naming_what_runs(caplog):
    with caplog.at_level(logging.INFO, logger="runner.device.precision"):
        assert policy_for("allow_mix_precision_bf16", "cpu") == "float32"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "allow_mix_precision_bf16" in record.getMessage() and "float32" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="runner.device.precision"):
        policy_for("force_fp32", "cpu")
        policy_for("allow_mix_precision_bf16", "gpu")
    assert not caplog.records
