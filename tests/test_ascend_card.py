"""The card a run opens when ASCEND_RT_VISIBLE_DEVICES is set, as Ray sets it for each task it gives
an NPU (hydra/launcher=ray_npu): on every CANN release, the card the variable names. CANN 8.0 and
later show the process only the listed cards, as indices 0, 1, ...; CANN 6.x's TensorFlow adapter
knows only logical ids among all cards. So the runner removes the variable before npu_device loads
and opens the named card by its id among all cards (runner/device/ascend_card.py)."""
from __future__ import annotations

import os

import pytest

from runner.device.ascend_card import card_to_open
from runner.device.npu import open_npu
from runner.errors import ConfigError
from tests.conftest import ON_ASCEND_STACK, compose_config, fake_npu_installed

pytestmark = pytest.mark.ascend_stack


def open_as_a_job(cfg, env):
    """open_npu as a Ray job runs it, with the environment Ray gave the job; the fake npu_device's
    record of what it opened, and the environment it opened with."""
    with fake_npu_installed(env, core_only=not ON_ASCEND_STACK) as fake:
        open_npu(cfg.device, cfg.threads, {"precision_mode": "force_fp32"}, loop_size=1)
        return fake._fake.state.opened.name(), dict(os.environ)


@pytest.mark.parametrize(("env", "card"), [
    ({"ASCEND_RT_VISIBLE_DEVICES": "5"}, 5),  # what Ray sets: one card
    ({"ASCEND_RT_VISIBLE_DEVICES": "2,3", "ASCEND_DEVICE_ID": "1"}, 3),  # an index into the list
    ({"ASCEND_RT_VISIBLE_DEVICES": "2,3"}, 2),  # the first card by default, as CANN does
])
def test_a_job_opens_the_card_the_variable_names_by_its_id_among_all_cards(env, card, tmp_path):
    name, env_at_the_end = open_as_a_job(compose_config(["device=npu"], tmp_path), env)
    assert name.endswith(f"NPU:{card}")
    # Gone before npu_device loaded CANN's runtime, which would otherwise read card as an index.
    assert "ASCEND_RT_VISIBLE_DEVICES" not in env_at_the_end
    assert env_at_the_end["ASCEND_DEVICE_ID"] == str(card)


def test_without_the_variable_the_choice_stays_device_id_or_npu_devices_default(monkeypatch):
    monkeypatch.delenv("ASCEND_RT_VISIBLE_DEVICES", raising=False)
    assert card_to_open(4) == 4
    assert card_to_open(None) is None  # npu_device then reads $ASCEND_DEVICE_ID


def test_a_set_device_id_beside_the_variable_is_refused_before_the_npu_opens(tmp_path):
    """As the device pool refuses it: with a launcher choosing the cards, device.id would put
    every job on one card."""
    cfg = compose_config(["device=npu", "device.id=1"], tmp_path)
    with pytest.raises(ConfigError, match="device.id"):
        open_as_a_job(cfg, {"ASCEND_RT_VISIBLE_DEVICES": "3"})


@pytest.mark.parametrize("env", [
    {"ASCEND_RT_VISIBLE_DEVICES": "3", "ASCEND_DEVICE_ID": "1"},  # no second card listed
    {"ASCEND_RT_VISIBLE_DEVICES": "npu3"},
    {"ASCEND_RT_VISIBLE_DEVICES": "3", "ASCEND_DEVICE_ID": "x"},
])
def test_values_that_name_no_card_are_config_errors(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if "ASCEND_DEVICE_ID" not in env:
        monkeypatch.delenv("ASCEND_DEVICE_ID", raising=False)
    with pytest.raises(ConfigError):
        card_to_open(None)
    assert os.environ["ASCEND_RT_VISIBLE_DEVICES"] == env["ASCEND_RT_VISIBLE_DEVICES"]  # untouched
