"""The tree's shape as README's Layout describes it: the rooms of runner/, models/, data/ and the
device-pool plugin stand in layers, each importing only the layers below its own, with no cycle;
the plugin imports nothing of the application, which imports only the plugin's public modules;
and one table says what each precision mode means on each device."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from runner.config.precision_modes import FLOAT32, PRECISION_MODES
from runner.config.schema import PrecisionMode
from runner.device.npu import npu_options
from runner.device.precision import policy_for
from tests.conftest import compose_config

pytestmark = pytest.mark.ascend_stack

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("runner", "models", "data", "hydra_plugins")
PLUGIN = "hydra_plugins.device_pool_launcher"

# Bottom to top. A room (a package, or a module of runner/ on its own) imports its own modules and
# the rooms of the layers below its own: nothing beside it, nothing above it.
LAYERS = [
    # The package's own __init__ (a docstring), the one-paragraph errors, and the plugin, which
    # stands apart: Hydra loads it for any app.
    {"runner", "runner.errors", PLUGIN},
    {"runner.keras2", "runner.versions"},  # where every module gets Keras; installed versions
    {"runner.config"},  # the schema, the precision table, the keys, the stored study
    {"models", "data"},
    {"runner.device"},
    {"runner.record"},
    {"runner.fit"},
    {"runner.ascend", "runner.preflight", "runner.tools"},
    {"runner.train"},
    {"runner.__main__", "runner.evaluate", "runner.predict", "runner.export", "runner.summarize"},
]
LAYER_OF = {room: number for number, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py")}


def imported_names(path: Path, module: str) -> set[str]:
    """What a module imports, at its top or inside a function, relative imports resolved: each
    `from a.b import c` as a.b and a.b.c (c may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[:len(parts) - node.level + 1], *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {name for name in found if name.split(".")[0] in FOLDERS}


def imports() -> dict[str, set[str]]:
    """Every project module -> the project names it imports."""
    return {module: imported_names(path, module) for module, path in project_modules().items()}


def room_of(name: str) -> str | None:
    """The room a module belongs to: the longest room its name starts with (`runner` itself only
    for the package's __init__)."""
    rooms = [room for room in LAYER_OF if name == room or (room != "runner" and name.startswith(room + "."))]
    return max(rooms, key=len, default=None)


def test_every_module_stands_in_a_room_of_a_layer():
    """A new package or top-level module of runner/ is placed in LAYERS (and README's Layout)."""
    homeless = sorted(module for module in project_modules() if room_of(module) is None)
    assert not homeless, homeless


def test_no_module_imports_itself_through_others():
    modules = set(project_modules())
    graph = {module: names & modules for module, names in imports().items()}
    done, on_path = set(), []

    def visit(module):
        if module in on_path:
            raise AssertionError(" -> ".join([*on_path[on_path.index(module):], module]))
        if module in done:
            return
        on_path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        on_path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize("room", sorted(LAYER_OF))
def test_a_room_imports_only_the_layers_below_it(room):
    """runner.errors and the plugin import nothing of the project; models/ and data/ know only
    runner.errors, runner.keras2 and the config; the devices nothing of the record, the fit or
    the Ascend side; the record nothing of the fit or the Ascend side; nothing imports
    runner.train or the commands but the commands."""
    wrong = sorted(
        f"{module} -> {name}"
        for module, names in imports().items() if room_of(module) == room
        for name in names
        if room_of(name) not in (room, None) and LAYER_OF[room_of(name)] >= LAYER_OF[room]
    )
    unknown = sorted(f"{module} -> {name}" for module, names in imports().items()
                     if room_of(module) == room for name in names if room_of(name) is None)
    assert not wrong and not unknown, wrong + unknown


def test_the_application_imports_only_the_plugins_public_modules():
    """hydra_plugins/device_pool_launcher's _-modules are its own; the application reads what it
    needs of a sweep's device pool (its record file) through a public module."""
    private = sorted(
        f"{module} -> {name}"
        for module, names in imports().items() if room_of(module) != PLUGIN
        for name in names if name.startswith(PLUGIN + ".")
        and any(part.startswith("_") for part in name[len(PLUGIN) + 1:].split("."))
    )
    assert not private, private


def test_every_precision_mode_has_one_row_and_one_option():
    """The group's options, the schema's enumeration and the table name the same modes."""
    options = {path.stem for path in (ROOT / "conf" / "precision").glob("*.yaml")}
    assert options == set(PRECISION_MODES) == {str(mode) for mode in PrecisionMode}


@pytest.mark.parametrize("mode", sorted(PRECISION_MODES))
def test_the_policies_come_from_the_table(mode):
    row = PRECISION_MODES[mode]
    assert policy_for(mode, "gpu") == row.gpu_policy
    assert policy_for(mode, "cpu") == row.cpu_policy == FLOAT32
    assert policy_for(mode, "npu") == FLOAT32
    cfg = compose_config([f"precision={mode}"])
    assert npu_options(cfg.precision.mode, cfg.debug, cfg.device, None)["precision_mode"] == mode
    # float16 on the NPU is what needs loss scaling; bf16 and float32 do not.
    assert row.npu_loss_scaled == (row.gpu_policy == "mixed_float16")
