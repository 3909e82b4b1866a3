"""The NPU path against the strict fake npu_device: exact options, their order, multi-card runs."""

import json

import pytest

from runner.checks import check_config
from runner.errors import ConfigError
from runner.npu import _set_options, npu_options, open_npu
from runner.train import train
from tests.conftest import TINY_RUN, compose_config, fake_npu_installed

PRECISIONS = [
    "force_fp32", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype", "allow_mix_precision",
    "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16", "cube_fp16in_fp32out",
]


def profiling_json(path, aic_metrics="PipeUtilization", fp_point="", bp_point=""):
    return json.dumps({
        "output": str(path), "training_trace": "on", "task_trace": "on", "aicpu": "on",
        "aic_metrics": aic_metrics, "fp_point": fp_point, "bp_point": bp_point,
    })


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_is_the_precision_mode_option_alone(precision, tmp_path):
    cfg = compose_config(["device=npu", f"precision={precision}"], tmp_path)
    assert npu_options(cfg) == {"precision_mode": precision}


def test_dump_overflow_and_profiling_with_overridden_paths_and_steps(tmp_path):
    cfg = compose_config([
        "device=npu", "precision=allow_mix_precision", "debug=[dump,overflow,profiling]",
        f"debug.dump.path={tmp_path}/dump", 'debug.dump.step="0|5|10-20"', "debug.dump.mode=all",
        "debug.overflow.mode=aicore_overflow", f"debug.profiling.path={tmp_path}/prof",
        "debug.profiling.fp_point=conv1", "debug.profiling.bp_point=predictions",
    ], tmp_path)
    assert npu_options(cfg) == {
        "precision_mode": "allow_mix_precision",
        "dump_config": {
            "enable_dump": True, "dump_path": f"{tmp_path}/dump", "dump_step": "0|5|10-20",
            "dump_mode": "all", "enable_dump_debug": True, "dump_debug_mode": "aicore_overflow",
        },
        "profiling_config": {
            "enable_profiling": True,
            "profiling_options": profiling_json(
                tmp_path / "prof", fp_point="conv1", bp_point="predictions"
            ),
        },
    }


def test_default_debug_paths_are_inside_the_run_directory(tmp_path):
    cfg = compose_config(["device=npu", "debug=[overflow,profiling]"], tmp_path)
    options = npu_options(cfg)
    assert options["dump_config"] == {
        "enable_dump_debug": True, "dump_path": f"{tmp_path}/overflow", "dump_debug_mode": "all",
    }
    assert options["profiling_config"]["profiling_options"] == profiling_json(tmp_path / "profiling")


def test_fusion_off_mixlist_and_auto_tune_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative files resolve against the working directory
    cfg = compose_config([
        "device=npu", "precision=allow_mix_precision", "debug=[fusion_off,mixlist,auto_tune]",
    ], tmp_path)
    assert npu_options(cfg) == {
        "precision_mode": "allow_mix_precision",
        "fusion_switch_file": str(tmp_path / "fusion_switch.cfg"),
        "modify_mixlist": str(tmp_path / "ops_info.json"),
        "auto_tune_mode": "RL,GA",
    }


def test_options_are_set_before_open_and_the_id_comes_from_the_config(fake_npu, tmp_path):
    cfg = compose_config(
        ["device=npu", "device.id=2", "precision=force_fp16", "debug=profiling"], tmp_path
    )
    open_npu(cfg)
    opened = fake_npu.last_opened
    assert opened.device_id == 2 and opened.is_default
    assert opened.options == npu_options(cfg)  # all of them reached open(): none was set late
    assert (tmp_path / "profiling").is_dir()  # the graph engine writes into existing folders


def test_device_id_defaults_to_ascend_device_id(fake_npu, monkeypatch, tmp_path):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "5")
    open_npu(compose_config(["device=npu"], tmp_path))
    assert fake_npu.last_opened.device_id == 5


def test_an_option_the_adapter_refuses_is_a_config_error(fake_npu):
    with pytest.raises(ConfigError, match=r"precision_mode='fp8'.*older CANN"):
        _set_options(fake_npu.global_options(), {"precision_mode": "fp8"})
    with pytest.raises(ConfigError, match=r"dump_config\.dump_mode='every'"):
        _set_options(fake_npu.global_options(), {"dump_config": {"dump_mode": "every"}})


@pytest.mark.parametrize("precision", ["force_fp32", "allow_fp32_to_fp16", "must_keep_origin_dtype"])
def test_mixlist_needs_allow_mix_precision(precision, tmp_path):
    cfg = compose_config(["device=npu", f"precision={precision}", "debug=mixlist"], tmp_path)
    with pytest.raises(ConfigError, match=f"precision={precision}.*precision=allow_mix_precision"):
        check_config(cfg)


def test_fusion_switch_file_must_exist_on_the_npu(tmp_path):
    cfg = compose_config(
        ["device=npu", "debug=fusion_off", f"debug.fusion_off.file={tmp_path}/nope.cfg"], tmp_path
    )
    with pytest.raises(ConfigError, match="nope.cfg, which is not a file"):
        check_config(cfg)


@pytest.mark.parametrize("env,message", [
    ({}, "RANK_SIZE, RANK_ID, RANK_TABLE_FILE are not set"),
    ({"RANK_SIZE": "8", "RANK_ID": "0"}, "RANK_TABLE_FILE is not set"),
    ({"RANK_SIZE": "4", "RANK_ID": "0", "RANK_TABLE_FILE": "TABLE"}, "RANK_SIZE=4 and RANK_ID=0"),
    ({"RANK_SIZE": "8", "RANK_ID": "8", "RANK_TABLE_FILE": "TABLE"}, "RANK_ID lie in 0..7"),
    ({"RANK_SIZE": "8", "RANK_ID": "one", "RANK_TABLE_FILE": "TABLE"}, "RANK_ID='one'"),
    ({"RANK_SIZE": "8", "RANK_ID": "1", "RANK_TABLE_FILE": "/no/table.json"}, "is not a file"),
])
def test_bad_rank_environment_is_a_config_error(env, message, tmp_path, monkeypatch):
    table = tmp_path / "rank_table.json"
    table.write_text("{}")
    for name in ("RANK_SIZE", "RANK_ID", "RANK_TABLE_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(table) if value == "TABLE" else value)
    cfg = compose_config(["device=npu", "device.num_devices=8"], tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_without_npu_device_the_run_stops_with_the_fix_and_writes_no_metrics(tmp_path):
    cfg = compose_config([*TINY_RUN, "device=npu"], tmp_path / "run")
    with pytest.raises(ConfigError, match="ships with CANN's TensorFlow adapter"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert "ships with CANN" in (tmp_path / "run" / "train.log").read_text()


@pytest.fixture(scope="module")
def npu_run(tmp_path_factory):
    """One real (tiny) training run on the fake NPU with dump, overflow and profiling on."""
    run_dir = tmp_path_factory.mktemp("npu") / "run"
    overrides = [
        *TINY_RUN, "epochs=1", "device=npu", "precision=allow_mix_precision",
        "debug=[dump,overflow,profiling]", 'debug.dump.step="0|5|10-20"', "debug.dump.mode=all",
    ]
    with fake_npu_installed() as npu_device:
        metrics = train(compose_config(overrides, run_dir))
        return run_dir, metrics, npu_device.last_opened, list(npu_device.distribute.calls)


def test_npu_run_sets_exactly_the_configured_options(npu_run):
    run_dir, _, opened, calls = npu_run
    assert opened.is_default and opened.device_id == 0
    assert opened.options == {
        "precision_mode": "allow_mix_precision",
        "dump_config": {
            "enable_dump": True, "dump_path": f"{run_dir}/dump", "dump_step": "0|5|10-20",
            "dump_mode": "all", "enable_dump_debug": True, "dump_debug_mode": "all",
        },
        "profiling_config": {
            "enable_profiling": True, "profiling_options": profiling_json(run_dir / "profiling"),
        },
    }
    assert calls == []  # one card: no sharding, no wrapped optimiser, no broadcast


def test_npu_run_writes_its_run_directory_with_the_ascend_figures(npu_run):
    run_dir, metrics, _, _ = npu_run
    for name in ("train.log", "env.json", "metrics.json", "checkpoints/last.weights.h5"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert metrics["precision_policy"] == "float32"  # the NPU applies precision_mode itself
    assert metrics["ActualFPS"] == metrics["images_per_sec"] > 0
    assert metrics["TrainingTime"] == pytest.approx(16 / metrics["images_per_sec"] * 1000, rel=0.01)
    assert (metrics["TrainAccuracy"], metrics["ActualLoss"]) == (
        metrics["val_accuracy"], metrics["train_loss"],
    )
    assert metrics["E2ETrainingTime"] == metrics["wall_seconds"]
    assert (metrics["DeviceType"], metrics["RankSize"], metrics["BatchSize"]) == ("npu", 1, 16)
    assert metrics["CaseName"] == "resizer_densenet_bs16_1p_acc"
    log = (run_dir / "train.log").read_text()
    assert "epoch: 1 step: 3 ,loss: " in log and "imgs/s: " in log
    assert f"ActualFPS: {metrics['ActualFPS']}" in log


@pytest.fixture(scope="module")
def second_card_run(tmp_path_factory):
    """Rank 1 of a two-card run: its own folder, its half of each batch, no checkpoints."""
    root = tmp_path_factory.mktemp("npu2")
    table = root / "rank_table.json"
    table.write_text("{}")
    env = {"RANK_SIZE": "2", "RANK_ID": "1", "RANK_TABLE_FILE": str(table), "ASCEND_DEVICE_ID": "1"}
    with fake_npu_installed(env) as npu_device:
        cfg = compose_config([*TINY_RUN, "epochs=1", "device=npu", "device.num_devices=2"], root / "run")
        metrics = train(cfg)
        return root / "run", metrics, npu_device.last_opened, list(npu_device.distribute.calls)


def test_each_card_writes_its_own_folder_and_only_rank_0_checkpoints(second_card_run):
    run_dir, metrics, opened, _ = second_card_run
    assert (opened.device_id, opened.workers_num, opened.worker_id) == (1, 2, 1)
    rank_dir = run_dir / "rank_1"
    assert (rank_dir / "metrics.json").is_file() and (rank_dir / "train.log").is_file()
    assert not (run_dir / "metrics.json").exists()
    assert not list(rank_dir.rglob("*.weights.h5"))
    assert (metrics["RankSize"], metrics["CaseName"]) == (2, "resizer_densenet_bs16_2p_acc")


def test_multi_card_shards_wraps_the_optimiser_and_broadcasts(second_card_run):
    _, _, _, calls = second_card_run
    assert ("shard_and_rebatch_dataset", 16, True) in calls
    assert ("npu_distributed_keras_optimizer_wrapper", "SGD") in calls
    broadcasts = [call for call in calls if call[0] == "broadcast"]
    assert len(broadcasts) == 1 and broadcasts[0][1] == 0 and broadcasts[0][2] > 100
    assert ("all_reduce", "mean", True) in calls  # the wrapped optimiser reduces the gradients
