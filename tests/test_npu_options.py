"""device.npu_options: checked before TensorFlow as the adapter checks them (the same tree and
setter rule as the strict fake's, which restates the real adapter's), set on global_options()
before open() after the runner's own, and a sweep's shared compile caches."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.config.npu_option_tree import OPTION_TREE, OWNED_BY, check_npu_options, refusal
from runner.errors import ConfigError
from tests.conftest import ON_ASCEND_STACK, compose_config, fake_npu_installed, runner_env

pytestmark = pytest.mark.ascend_stack

OPENING_ONLY = not ON_ASCEND_STACK  # the default stack loads only the fake's device-opening part
PROBES = [0, 1, 2, 4, -1, True, False, None, 1.5, "0", "1", "2", "4", "true", "auto", "enable",
          "force", "output", "stats", "LB", "SINGLE", "manual", "high_precision", "bad"]


def _fake_leaves(config, path=""):
    """(dotted name, OptionValue) of every leaf of the fake adapter's option tree."""
    from npu_device._options import NpuBaseConfig, OptionValue

    for name in config._fixed_attrs:
        node = getattr(config, name)
        if isinstance(node, NpuBaseConfig):
            yield from _fake_leaves(node, f"{path}{name}.")
        elif isinstance(node, OptionValue):
            yield f"{path}{name}", node


def _tree_leaves(tree, path=""):
    for name, entry in tree.items():
        if isinstance(entry, dict):
            yield from _tree_leaves(entry, f"{path}{name}.")
        else:
            yield f"{path}{name}", entry


def _adapter_refuses(option_value, value) -> str | None:
    try:
        option_value.value = value
    except TypeError:
        return "TypeError"
    except ValueError:
        return "ValueError"
    return None


def test_the_runners_tree_is_the_adapters_leaf_for_leaf_and_refuses_what_it_refuses():
    with fake_npu_installed(core_only=OPENING_ONLY) as npu:
        fake = dict(_fake_leaves(npu.global_options()))
        ours = dict(_tree_leaves(OPTION_TREE))
        assert sorted(ours) == sorted(fake)
        for name, leaf in ours.items():
            for value in PROBES:
                adapter = _adapter_refuses(fake[name], value)
                runner = refusal(value, leaf)
                assert (runner is None) == (adapter is None), (name, value, adapter, runner)
                assert adapter is None or f"({adapter})" in runner, (name, value, runner)


@pytest.mark.parametrize("key", sorted(OWNED_BY))
def test_a_key_the_runner_sets_is_refused_with_its_group(key):
    value: dict = {}
    node = value
    *parents, leaf = key.split(".")
    for parent in parents:
        node = node.setdefault(parent, {})
    node[leaf] = "x"
    with pytest.raises(ConfigError) as caught:
        check_npu_options(value)
    group = OWNED_BY[key].split()[0]  # e.g. `precision=`, `debug=dump`
    assert group in str(caught.value)


def test_an_unknown_key_names_the_close_one_at_its_depth():
    with pytest.raises(ConfigError) as caught:
        check_npu_options({"memory_config": {"static_memry_policy": 2}})
    assert "device.npu_options.memory_config.static_memory_policy" in str(caught.value)
    with pytest.raises(ConfigError):
        check_npu_options({"static_memory_policy": 2})  # it lives in memory_config
    with pytest.raises(ConfigError):
        check_npu_options({"memory_config": 2})  # a group, not a value


def test_good_options_pass_at_every_depth():
    check_npu_options({
        "deterministic": 1, "hcom_parallel": False, "op_precision_mode": "/x/op_precision.ini",
        "memory_config": {"static_memory_policy": 2},
        "experimental": {"graph_memory_optimize_config": {"recompute": "manual"}},
        "aoe_config": {"aoe_config_file": "/x/aoe.json"},
    })


def test_a_bad_option_fails_at_exit_2_before_tensorflow_loads(tmp_path):
    """`python -m runner` itself: exit 2, and TensorFlow never imported (-X importtime lists it)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "device=npu",
         "+device.npu_options.deterministic=2", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, env=runner_env(), timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "deterministic" in done.stderr + done.stdout
    assert not [line for line in done.stderr.splitlines() if line.rstrip().endswith("| tensorflow")]


def test_options_are_set_over_the_runners_and_before_open(tmp_path):
    from runner.device.npu import npu_options, open_npu

    cfg = compose_config([
        "device=npu", "debug=auto_tune", "+device.npu_options.deterministic=1",
        "+device.npu_options.memory_config.static_memory_policy=2",
        "+device.npu_options.aoe_config.aoe_config_file=/x/aoe.json",
    ], tmp_path)
    options = npu_options(cfg.precision.mode, cfg.debug, cfg.device, None)
    assert options["aoe_config"]["aoe_mode"] == "2"  # the runner's, kept beside the user's
    with fake_npu_installed(core_only=OPENING_ONLY) as fake:
        open_npu(cfg.device, cfg.threads, options, loop_size=1)
        opened_with = fake._fake.state.open_options
        assert fake._fake.state.mutated_after_open == []
    assert opened_with["deterministic"] == "1"
    assert opened_with["static_memory_policy"] == "2"
    assert opened_with["aoe_config_file"] == "/x/aoe.json"
    assert opened_with["aoe_mode"] == "2"
    assert "op_compiler_cache_dir" not in opened_with  # a single run: the adapter's defaults


def test_an_option_the_installed_adapter_lacks_is_named(tmp_path):
    """As an r1.12.0 adapter, which has no jit_compile."""
    from runner.device.npu import open_npu

    cfg = compose_config(["device=npu", "+device.npu_options.jit_compile=false"], tmp_path)
    with fake_npu_installed(core_only=OPENING_ONLY) as fake:
        options = fake.global_options()
        options._fixed_attrs.remove("jit_compile")
        object.__delattr__(options, "jit_compile")
        with pytest.raises(ConfigError) as caught:
            open_npu(cfg.device, cfg.threads, {"jit_compile": "false"}, loop_size=1)
        assert fake._fake.state.opened is None
    assert "jit_compile" in str(caught.value)


def test_a_sweeps_jobs_share_one_compile_cache_and_a_single_run_keeps_the_adapters(tmp_path):
    from runner.device.npu import npu_options

    cfg = compose_config(["device=npu"], tmp_path)
    sweep = tmp_path / "multirun"
    job = npu_options(cfg.precision.mode, cfg.debug, cfg.device, str(sweep))
    assert Path(job["op_compiler_cache_dir"]).parent == Path(job["graph_compiler_cache_dir"]).parent
    assert Path(job["op_compiler_cache_dir"]).parent.parent == sweep.resolve()
    assert job["op_compiler_cache_dir"] != job["graph_compiler_cache_dir"]
    assert "op_compiler_cache_dir" not in npu_options(cfg.precision.mode, cfg.debug, cfg.device, None)
    off = compose_config(["device=npu", "device.sweep_compile_cache=false"], tmp_path)
    assert "op_compiler_cache_dir" not in npu_options(off.precision.mode, off.debug, off.device, str(sweep))
    mine = compose_config(["device=npu", "+device.npu_options.op_compiler_cache_dir=/mine"], tmp_path)
    chosen = npu_options(mine.precision.mode, mine.debug, mine.device, str(sweep))
    assert chosen["op_compiler_cache_dir"] == "/mine"


def test_only_a_multirun_job_has_a_sweep_folder():
    from hydra.types import RunMode

    from runner.train import _sweep_dir

    def hydra(mode):
        return OmegaConf.create({"mode": mode, "sweep": {"dir": "/s"}, "run": {"dir": "/r"}})

    assert _sweep_dir(hydra(RunMode.MULTIRUN)) == "/s"
    assert _sweep_dir(hydra(RunMode.RUN)) is None
    assert _sweep_dir(None) is None


@pytest.mark.skipif(ON_ASCEND_STACK, reason="the default stack's refusal")
def test_the_default_stack_refuses_npu_options_as_it_refuses_the_npu(tmp_path):
    from runner.preflight import check_config
    from runner.versions import ASCEND_STACK

    cfg = compose_config(["device=npu", "+device.npu_options.deterministic=1"], tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert ASCEND_STACK in str(caught.value)
