"""Where a job ran, for env.json's `placement` and the sweep summary: the host, the Ray node when a
Ray worker runs the job (hydra/launcher=ray_*), and the device the launcher gave it, read from the
environment the launcher set. No TensorFlow, and Ray only when the process already runs it."""
from __future__ import annotations

import os
import socket
import sys
from typing import Any


def placement(device_cfg: Any) -> dict[str, Any]:
    return {"host": socket.gethostname(), "device": device_label(device_cfg), **_ray_node()}


def device_label(device_cfg: Any) -> str:
    """npu:<card> (device.id, else $ASCEND_DEVICE_ID, which runner/device/ascend_card.py sets to
    the card Ray gave), gpu:<$CUDA_VISIBLE_DEVICES> (Ray's and the device pool's choice; `all`
    when unset), or cpu."""
    kind = str(device_cfg.type)
    if kind == "npu":
        card = device_cfg.id if device_cfg.id is not None else os.environ.get("ASCEND_DEVICE_ID", "0")
        return f"npu:{card}"
    if kind == "gpu":
        return f"gpu:{os.environ.get('CUDA_VISIBLE_DEVICES', 'all')}"
    return "cpu"


def _ray_node() -> dict[str, str]:
    """The Ray node running this process, if it is a Ray worker (Ray imported and connected)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    node_id = ray.get_runtime_context().get_node_id()
    # The address the node was started with (--node-ip-address), as the cluster knows it.
    address = next((node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == node_id), "")
    return {"ray_node_id": node_id, "ray_node_ip": address}


def node_label(job_placement: dict[str, Any]) -> str:
    """A Ray node as the summary names it: its address and the start of its id (several nodes
    may share an address)."""
    if "ray_node_id" not in job_placement:
        return str(job_placement.get("host", ""))
    return f"{job_placement['ray_node_ip']} {job_placement['ray_node_id'][:8]}"
