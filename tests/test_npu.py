"""The NPU path: the config -> npu_device options mapping on both stacks; on the Ascend stack, runs
against the strict fake npu_device (tests/fake_npu: the real adapter's option tree, errors, call
order and optimizer patches) on one card and on two cards in two processes."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.device.npu import _set_options, import_npu_device, npu_options, open_npu
from runner.errors import ConfigError
from runner.preflight import check_config
from runner.train import train
from tests.conftest import (
    CONF_DIR,
    FAKE_NPU_DIR,
    ON_ASCEND_STACK,
    TINY_RUN,
    compose_config,
    fake_npu_installed,
    forget_npu_device,
    needs_ascend_stack,
    runner_env,
    wait_for_all,
)

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

PRECISIONS = [
    "force_fp32", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype", "allow_mix_precision",
    "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16", "cube_fp16in_fp32out",
]


def options_for(cfg):
    """The npu_device options a composed config sets (its precision mode and debug tools)."""
    return npu_options(cfg.precision.mode, cfg.debug, cfg.device, None)


def open_npu_for(cfg):
    """open_npu as set_up_device calls it for this config."""
    return open_npu(cfg.device, cfg.threads, options_for(cfg), loop_size=cfg.steps_per_execution)


def profiling_json(path, aic_metrics="PipeUtilization", fp_point="", bp_point=""):
    return json.dumps({
        "output": str(path), "training_trace": "on", "task_trace": "on", "aicpu": "on",
        "aic_metrics": aic_metrics, "fp_point": fp_point, "bp_point": bp_point,
    })


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_is_the_precision_mode_option_alone(precision, tmp_path):
    cfg = compose_config(["device=npu", f"precision={precision}"], tmp_path)
    assert options_for(cfg) == {"precision_mode": precision}


def test_dump_overflow_and_profiling_with_overridden_paths_and_steps(tmp_path):
    cfg = compose_config([
        "device=npu", "precision=allow_mix_precision", "debug=[dump,overflow,profiling]",
        f"debug.dump.path={tmp_path}/dump", 'debug.dump.step="0|5|10-20"', "debug.dump.mode=all",
        "debug.overflow.mode=aicore_overflow", f"debug.profiling.path={tmp_path}/prof",
        "debug.profiling.fp_point=conv1", "debug.profiling.bp_point=predictions",
    ], tmp_path)
    assert options_for(cfg) == {
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
    options = options_for(cfg)
    assert options["dump_config"] == {
        "enable_dump_debug": True, "dump_path": f"{tmp_path}/overflow", "dump_debug_mode": "all",
    }
    assert options["profiling_config"]["profiling_options"] == profiling_json(tmp_path / "profiling")


def test_fusion_off_mixlist_and_auto_tune_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative files resolve against the working directory
    cfg = compose_config([
        "device=npu", "precision=allow_mix_precision", "debug=[fusion_off,mixlist,auto_tune]",
        "debug.fusion_off.file=my_switches.cfg",
    ], tmp_path)
    assert options_for(cfg) == {
        "precision_mode": "allow_mix_precision",
        "fusion_switch_file": str(tmp_path / "my_switches.cfg"),  # a named file wins
        "modify_mixlist": str(tmp_path / "ops_info.json"),
        "aoe_config": {"aoe_mode": "2", "work_path": str(tmp_path / "aoe")},
    }


# The passes the shipped conf/debug/fusion_switch.cfg turns off (docs/devices.md): those the
# Ascend ModelZoo's TF2 Keras recipes switch off in their own configs/fusion_switch.cfg.
SHIPPED_SWITCHES = {
    "GraphFusion": {"DreluFusionPass": "off"},
    "UBFusion": {name: "off" for name in (
        "TbeConv2DBackpropElemwiseFusionPass", "TbeConv2DReluv2Pass", "TbeEltwiseFusionPass",
        "TbeFullyconnectionElemwiseDequantFusionPass",
    )},
}


def test_fusion_off_without_a_file_hands_the_npu_the_shipped_switch_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # wherever the run starts
    cfg = compose_config(["device=npu", "debug=fusion_off"], tmp_path)
    switch_file = Path(options_for(cfg)["fusion_switch_file"])
    assert switch_file.is_absolute() and switch_file.parent == Path(CONF_DIR) / "debug"
    assert json.loads(switch_file.read_text()) == {"Switch": SHIPPED_SWITCHES}


@pytest.mark.parametrize("precision", ["force_fp32", "allow_fp32_to_fp16", "must_keep_origin_dtype"])
def test_mixlist_needs_allow_mix_precision(precision, tmp_path):
    cfg = compose_config(["device=npu", f"precision={precision}", "debug=mixlist"], tmp_path)
    with pytest.raises(ConfigError, match=f"precision={precision}.*precision=allow_mix_precision"):
        check_config(cfg)


def test_the_npu_gets_static_shapes_unless_told_otherwise(tmp_path):
    """docs/devices.md: static shapes (drop_remainder) are on by default on the NPU only."""
    from runner.device.strategy import static_shape

    for overrides, static in ((["device=npu"], True), (["device=npu", "static_shape=false"], False),
                              ([], False)):
        cfg = compose_config(overrides, tmp_path)
        assert static_shape(cfg.static_shape, cfg.device.type) is static


@pytest.mark.parametrize("tool", ["fusion_off", "mixlist"])
def test_the_fusion_switch_and_mixlist_files_must_exist_on_the_npu(tool, tmp_path):
    """docs/devices.md: relative fusion_off/mixlist files are resolved against the working
    directory and must exist."""
    cfg = compose_config(["device=npu", "precision=allow_mix_precision", f"debug={tool}",
                          f"debug.{tool}.file={tmp_path}/nope.cfg"], tmp_path)
    with pytest.raises(ConfigError, match=f"debug.{tool}.file=.*nope.cfg, which is not a file"):
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


@needs_ascend_stack
@pytest.mark.parametrize("steps_per_epoch", ["null", "6"])
def test_npu_loop_needs_whole_loops_per_epoch(steps_per_epoch, tmp_path):
    cfg = compose_config(
        ["device=npu", "steps_per_execution=4", f"steps_per_epoch={steps_per_epoch}"], tmp_path
    )
    with pytest.raises(ConfigError, match="steps_per_epoch to a multiple of 4"):
        check_config(cfg)
    check_config(compose_config(["device=npu", "steps_per_execution=4", "steps_per_epoch=8"], tmp_path))


# -- the default stack: device=npu stops before training, naming the Ascend stack -------------------


@pytest.mark.skipif(ON_ASCEND_STACK, reason="the default stack's refusal")
def test_default_stack_refuses_device_npu_naming_the_ascend_stack(tmp_path):
    cfg = compose_config([*TINY_RUN, "device=npu"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"TensorFlow 2\.6\.5.*requirements-ascend-host\.lock"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert "requirements-ascend-host.lock" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.skipif(ON_ASCEND_STACK, reason="the default stack's refusal")
def test_default_stack_explains_an_npu_device_that_cannot_import(monkeypatch):
    """The real adapter, like its fake, is present but fails to import under TF 2.21's Keras."""
    monkeypatch.syspath_prepend(str(FAKE_NPU_DIR))
    try:
        with pytest.raises(ConfigError) as raised:
            import_npu_device()
    finally:
        forget_npu_device()
    assert "import npu_device` failed" in str(raised.value)
    assert "requirements-ascend-host.lock" in str(raised.value) and "\n" not in str(raised.value)


# -- the Ascend stack, against the fake ---------------------------------------------------------


@needs_ascend_stack
def test_without_npu_device_the_run_stops_with_the_fix_and_writes_no_metrics(tmp_path):
    cfg = compose_config([*TINY_RUN, "device=npu"], tmp_path / "run")
    with pytest.raises(ConfigError, match="ships with CANN's TensorFlow adapter"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert "set_env.sh" in (tmp_path / "run" / "train.log").read_text()


# Both stacks: the default stack loads only the fake's device-opening part (see fake_npu_installed).
OPENING_ONLY = not ON_ASCEND_STACK


def test_options_are_set_before_open_and_the_id_comes_from_the_config(tmp_path):
    cfg = compose_config(
        ["device=npu", "device.id=2", "precision=force_fp16", "debug=profiling",
         "steps_per_execution=2"], tmp_path,
    )
    with fake_npu_installed(core_only=OPENING_ONLY) as fake:
        open_npu_for(cfg)
        state = fake._fake.state
        assert state.opened.name().endswith("NPU:2") and state.npu_ctx is state.opened  # as_default()
        assert state.open_options["precision_mode"] == "force_fp16"
        assert state.open_options["enable_profiling"] == "1"
        assert json.loads(state.open_options["profiling_options"])["output"] == str(tmp_path / "profiling")
        assert state.mutated_after_open == []  # nothing set after open(): the device would ignore it
        assert state.loop_sizes == [2]  # the npu loop size follows steps_per_execution
    assert (tmp_path / "profiling").is_dir()  # the graph engine writes into existing folders


@pytest.mark.parametrize("threads", [[], ["threads.intra_op=1", "threads.inter_op=2"]])
def test_seed_and_thread_pools_hold_after_the_npu_opens(threads, tmp_path):
    """open() installs a new eager context (as the real adapter does): a seed or thread pools set
    on the one before would be lost. Two processes seeded alike draw alike."""
    import tensorflow as tf

    from runner.device.strategy import set_up_device
    from runner.device.threads import thread_pools
    from runner.keras2 import keras

    cfg = compose_config(["device=npu", "seed=42", *threads], tmp_path)
    draws = []
    for _ in range(2):
        with fake_npu_installed(core_only=OPENING_ONLY) as fake:  # each time as a fresh process
            set_up_device(cfg)
            assert fake._fake.state.npu_ctx is fake._fake.state.opened  # opened, as_default()
            expected = {"intra_op": 1, "inter_op": 2} if threads else {"intra_op": 0, "inter_op": 0}
            assert thread_pools() == expected
            # Keras 2.21's unseeded initializers draw their seeds from Python's random module;
            # tf.random ops use the eager context's global seed, the one open() would lose.
            draws.append([keras.initializers.GlorotUniform()((4, 4)).numpy().tolist(),
                          tf.random.uniform((4,)).numpy().tolist()])
    assert draws[0] == draws[1]


@needs_ascend_stack
def test_device_id_defaults_to_ascend_device_id(tmp_path):
    with fake_npu_installed({"ASCEND_DEVICE_ID": "5"}) as fake:
        open_npu_for(compose_config(["device=npu"], tmp_path))
        assert fake._fake.state.opened.name().endswith("NPU:5")


@needs_ascend_stack
def test_an_option_the_adapter_refuses_is_a_config_error(fake_npu):
    with pytest.raises(ConfigError, match=r"precision_mode='fp8'.*update CANN"):
        _set_options(fake_npu.global_options(), {"precision_mode": "fp8"})
    with pytest.raises(ConfigError, match=r"dump_config\.dump_mode='every'"):
        _set_options(fake_npu.global_options(), {"dump_config": {"dump_mode": "every"}})
    with pytest.raises(ConfigError, match=r"auto_tune_mode"):  # named as an option this adapter lacks
        _set_options(fake_npu.global_options(), {"auto_tune_mode": "RL,GA"})  # gone in current CANN


# docs/devices.md: the precision modes that compute in float16, whose optimiser the runner wraps
# in NpuLossScaleOptimizer; the others keep the optimiser as it is.
LOSS_SCALED = {"allow_fp32_to_fp16", "force_fp16", "allow_mix_precision", "allow_mix_precision_fp16",
               "cube_fp16in_fp32out"}


@needs_ascend_stack
@pytest.mark.parametrize("precision", PRECISIONS)
def test_float16_modes_scale_the_loss_and_several_cards_wrap_that(precision, fake_npu, tmp_path):
    """On several cards npu_distributed_keras_optimizer_wrapper goes around the loss-scale
    optimiser (it patches apply_gradients on that instance)."""
    from runner.device.npu import npu_optimizer
    from runner.keras2 import optimizers

    loss_scale = fake_npu.train.optimizer.NpuLossScaleOptimizer
    for cards in (1, 2):
        cfg = compose_config(["device=npu", f"precision={precision}", f"device.num_devices={cards}"],
                             tmp_path)
        optimizer = npu_optimizer(cfg.device, cfg.precision.mode, optimizers.SGD(0.1))
        assert isinstance(optimizer, loss_scale) == (precision in LOSS_SCALED)
        assert ("apply_gradients" in vars(optimizer)) == (cards == 2)


@needs_ascend_stack
@pytest.mark.parametrize("sat_mode,path", [(0, "npu_path"), (1, "fallback")])
def test_loss_scaling_skips_overflowing_steps_in_both_overflow_modes(sat_mode, path, fake_npu, tmp_path):
    """Saturation mode (0, Atlas training series): NpuLossScaleOptimizer reads the device's float
    status. INF/NaN mode (1, the default on Atlas A2/A3): it hands the step to Keras'
    LossScaleOptimizer, which checks the gradients. Either way an overflowing step is skipped and
    the loss scale halves; a finite step is applied."""
    import numpy as np

    from runner.device.npu import npu_optimizer
    from runner.keras2 import keras, optimizers

    cfg = compose_config(["device=npu", "precision=allow_mix_precision"], tmp_path)
    open_npu_for(cfg)
    fake_npu.set_device_sat_mode(sat_mode)
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile(npu_optimizer(cfg.device, cfg.precision.mode, optimizers.SGD(0.1)), loss="mse")
    scale = float(model.optimizer.loss_scale)
    weights = model.get_weights()
    model.train_on_batch(np.array([[np.inf, 1.0]], "float32"), np.ones((1, 1), "float32"))
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))  # skipped
    assert float(model.optimizer.loss_scale) == scale / 2
    model.train_on_batch(np.ones((1, 2), "float32"), np.ones((1, 1), "float32"))
    assert not np.array_equal(weights[0], model.get_weights()[0])  # applied
    assert fake_npu._fake.count(f"loss_scale.{path}") == 2


NPU_RUN = [*TINY_RUN, "epochs=1", "steps_per_epoch=4", "steps_per_execution=2", "device=npu"]
# Reproducible: the seed, deterministic ops and input order (TF 2.6 reads TF_DETERMINISTIC_OPS).
NPU_RUN_SETTINGS = ["seed=42", "deterministic=true", "threads.intra_op=1", "threads.inter_op=1"]
DETERMINISTIC_ENV = {"TF_DETERMINISTIC_OPS": "1"}


@pytest.fixture(scope="module")
def npu_run(tmp_path_factory):
    """One real (tiny) training run on the fake NPU: float16 mixed precision, all debug tools."""
    run_dir = tmp_path_factory.mktemp("npu") / "run"
    overrides = [
        *NPU_RUN, *NPU_RUN_SETTINGS, "precision=allow_mix_precision",
        "debug=[dump,overflow,profiling,auto_tune]", 'debug.dump.step="0|5|10-20"',
        "debug.dump.mode=all",
    ]
    with fake_npu_installed(DETERMINISTIC_ENV) as npu_device:
        metrics = train(compose_config(overrides, run_dir))
        return run_dir, metrics, npu_device._fake.summary()


def first_logged_loss(run_dir) -> float:
    return float(re.search(r"step: \d+ ,loss: ([\d.]+)", (run_dir / "train.log").read_text()).group(1))


@needs_ascend_stack
def test_two_npu_runs_seeded_alike_start_at_the_same_loss_on_the_thread_pools_asked_for(npu_run,
                                                                                        tmp_path):
    """The same first two steps as npu_run, in another run of the same seed (the first loss is
    logged after one device loop of two steps)."""
    run_dir = npu_run[0]
    overrides = [*NPU_RUN, *NPU_RUN_SETTINGS, "precision=allow_mix_precision", "steps_per_epoch=2"]
    with fake_npu_installed(DETERMINISTIC_ENV):
        train(compose_config(overrides, tmp_path / "again"))
    assert first_logged_loss(tmp_path / "again") == first_logged_loss(run_dir)
    for log in (run_dir / "train.log", tmp_path / "again" / "train.log"):
        assert "threads.intra_op=1 threads.inter_op=1" in log.read_text()  # as TensorFlow holds them


@needs_ascend_stack
def test_npu_run_opens_the_device_with_every_option_set_before(npu_run):
    run_dir, _, fake = npu_run
    assert fake["opened"] == {
        "name": "/job:localhost/replica:0/task:0/device:NPU:0", "workers_num": 1, "worker_id": 0,
    }
    assert fake["as_default"] and fake["mutated_after_open"] == []
    options = fake["open_options"]
    assert {key: options[key] for key in (
        "precision_mode", "enable_dump", "dump_path", "dump_step", "dump_mode", "enable_dump_debug",
        "dump_debug_mode", "enable_profiling", "aoe_mode", "work_path",
    )} == {
        "precision_mode": "allow_mix_precision", "enable_dump": "1", "dump_path": f"{run_dir}/dump",
        "dump_step": "0|5|10-20", "dump_mode": "all", "enable_dump_debug": "1",
        "dump_debug_mode": "all", "enable_profiling": "1", "aoe_mode": "2",
        "work_path": f"{run_dir}/aoe",
    }
    assert json.loads(options["profiling_options"]) == json.loads(profiling_json(run_dir / "profiling"))
    assert fake["loop_sizes"] == [2]
    # docs/devices.md: dump, profiling and AOE folders exist before the device opens.
    assert all((run_dir / name).is_dir() for name in ("dump", "profiling", "aoe"))


@needs_ascend_stack
def test_npu_run_scales_the_float16_loss_on_the_device_and_runs_single_card(npu_run):
    _, metrics, fake = npu_run
    counts = fake["counts"]
    # NpuLossScaleOptimizer's NPU path ran every optimiser step (4 steps, 2 per device loop).
    assert counts["loss_scale.npu_path"] == 4 and counts.get("loss_scale.fallback", 0) == 0
    assert metrics["optimizer_steps"] == 4 - counts.get("loss_scale.skipped_steps", 0)
    # One card: no shard, no wrapped optimiser, and the broadcast was never asked for.
    assert not {"shard_and_rebatch_dataset", "npu_distributed_keras_optimizer_wrapper", "broadcast"} & set(
        fake["calls"]
    )


@needs_ascend_stack
def test_npu_run_writes_its_run_directory_with_the_ascend_figures(npu_run):
    run_dir, metrics, _ = npu_run
    for name in ("train.log", "env.json", "metrics.json", "checkpoints/last_weights.h5"):
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
    assert "epoch: 1 step: 4 ,loss: " in log and "imgs/s: " in log
    assert f"ActualFPS: {metrics['ActualFPS']}" in log


@pytest.fixture(scope="module")
def two_card_run(tmp_path_factory):
    """Two processes, one per card (RANK_SIZE=2, RANK_ID=0/1), as the Ascend 8p scripts start them;
    each writes what its fake npu_device did into a JSON file when it exits."""
    root = tmp_path_factory.mktemp("npu2")
    table = root / "rank_table.json"
    table.write_text("{}")
    run_dir = root / "run"
    processes = []
    for rank in range(2):
        env = {
            **runner_env(), "PYTHONPATH": f"{FAKE_NPU_DIR}:{runner_env()['PYTHONPATH']}",
            "RANK_SIZE": "2", "RANK_ID": str(rank), "RANK_TABLE_FILE": str(table),
            "ASCEND_DEVICE_ID": str(rank), "FAKE_NPU_RECORD": str(root / f"fake{rank}.json"),
        }
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "runner", *NPU_RUN, "device.num_devices=2", "precision=force_fp32",
             f"hydra.run.dir={run_dir}"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(root / f"rank{rank}.err", "w"),
        ))
    codes = wait_for_all(processes, timeout=400)
    assert codes == [0, 0], (root / "rank1.err").read_text()[-3000:]
    fakes = [json.loads((root / f"fake{rank}.json").read_text()) for rank in range(2)]
    return run_dir, fakes


@needs_ascend_stack
def test_each_card_writes_its_own_folder_and_only_rank_0_checkpoints(two_card_run):
    run_dir, fakes = two_card_run
    assert [fake["opened"]["name"][-5:] for fake in fakes] == ["NPU:0", "NPU:1"]
    ranks = [(fake["opened"]["workers_num"], fake["opened"]["worker_id"]) for fake in fakes]
    assert ranks == [(2, 0), (2, 1)]
    chief = json.loads((run_dir / "metrics.json").read_text())
    other = json.loads((run_dir / "rank_1" / "metrics.json").read_text())
    assert (chief["RankSize"], chief["CaseName"]) == (2, "resizer_densenet_bs16_2p_acc")
    assert other["RankSize"] == 2
    assert (run_dir / "checkpoints" / "last_weights.h5").is_file()
    assert not list((run_dir / "rank_1").rglob("*_weights.h5"))
    # docs/devices.md: every other rank writes its own train.log and history.csv in rank_<id>/.
    assert (run_dir / "rank_1" / "train.log").is_file() and (run_dir / "rank_1" / "history.csv").is_file()


@needs_ascend_stack
def test_multi_card_shards_and_all_reduces_every_step_and_broadcasts_once(two_card_run):
    _, fakes = two_card_run
    for fake in fakes:
        counts = fake["counts"]
        # The wrapped optimiser ran its all-reducing apply_gradients at every one of the 4 steps
        # (counted as the steps ran, not when Keras traced them), on every trainable variable.
        assert counts["wrapper.apply_gradients"] == 4 and counts["all_reduce.mean"] == 4
        assert counts["all_reduce.values"] % 4 == 0 and counts["all_reduce.values"] // 4 > 100
        assert counts.get("all_reduce.skipped", 0) == 0
        # Rank 0's weights went to every card once, when training started.
        assert counts["broadcast"] == 1 and counts["broadcast.values"] > 100
        assert "shard_and_rebatch_dataset" in fake["calls"]
        assert fake["loop_sizes"] == [2]
