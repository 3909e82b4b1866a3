"""Which Ascend card a run opens when ASCEND_RT_VISIBLE_DEVICES is set (Ray sets it for each task
it gives an NPU, as CUDA_VISIBLE_DEVICES for a GPU). No TensorFlow here.

What CANN does with the variable depends on its release. From CANN 8.0 on, its environment
variable reference says the runtime shows the process only the listed cards (logical ids), as
indices 0, 1, ...; that for TensorFlow the variable wins over ASCEND_DEVICE_ID, which must then be
an index into the list; and that profiling does not work with it. CANN 6.x's TensorFlow guides
know only ASCEND_DEVICE_ID (and npu_device.open(id)), a logical id among all the host's cards, so
there the variable is not honoured by the TensorFlow adapter and device 0 is the host's first card.

So the runner does what is right on every release: it takes the card the variable names (the
one ASCEND_DEVICE_ID indexes, 0 by default, as CANN would), removes the variable before
npu_device loads CANN's runtime, and opens that card by its logical id among all cards, setting
ASCEND_DEVICE_ID to it (the Ascend tools' logs and paths use it).
"""
from __future__ import annotations

import os

from runner.errors import ConfigError

VISIBLE_ENV = "ASCEND_RT_VISIBLE_DEVICES"
DEVICE_ID_ENV = "ASCEND_DEVICE_ID"


def card_to_open(device_id: int | None) -> int | None:
    """The id to pass to npu_device.open(): device.id, or with ASCEND_RT_VISIBLE_DEVICES set, the
    card it names (the variable then removed from this process's environment); None leaves the
    choice to npu_device ($ASCEND_DEVICE_ID, else 0)."""
    visible = os.environ.get(VISIBLE_ENV)
    if visible is None:
        return device_id
    if device_id is not None:
        raise ConfigError(
            f"device.id={device_id} with {VISIBLE_ENV}={visible} (set by hydra/launcher=ray_npu for "
            f"each job, or by you): both choose the card, and with a launcher every job would open "
            f"card {device_id}. Leave device.id null (the run opens the card {VISIBLE_ENV} names), "
            f"or unset {VISIBLE_ENV}."
        )
    card = _listed_card(visible, os.environ.get(DEVICE_ID_ENV, "0"))
    del os.environ[VISIBLE_ENV]
    os.environ[DEVICE_ID_ENV] = str(card)
    return card


def _listed_card(visible: str, index: str) -> int:
    cards = visible.split(",")
    if not all(card.strip().isdigit() for card in cards) or not index.strip().isdigit():
        raise ConfigError(
            f"{VISIBLE_ENV}={visible!r} and {DEVICE_ID_ENV}={index!r}: expected card ids separated "
            f"by commas (e.g. 3 or 2,3) and an index into them (0 by default)."
        )
    if int(index) >= len(cards):
        raise ConfigError(
            f"{DEVICE_ID_ENV}={index} with {VISIBLE_ENV}={visible}: {DEVICE_ID_ENV} is an index into "
            f"the {len(cards)} visible card(s) there; unset {DEVICE_ID_ENV} (the first visible card) "
            f"or set it below {len(cards)}."
        )
    return int(cards[int(index)])
