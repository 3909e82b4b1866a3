"""The tree's shape as README's Layout describes it: runner/'s rooms import each other one way,
with no cycle, and one table says what each precision mode means on each device."""

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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports (at its top or inside a function)."""
    graph = {}
    for folder in ("runner", "models", "data"):
        for path in (ROOT / folder).rglob("*.py"):
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
                elif isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
            graph[module_name(path)] = {name for name in found
                                        if name.split(".")[0] in ("runner", "models", "data")}
    return graph


def test_no_module_imports_itself_through_others():
    graph = imports()
    done, on_path = set(), []

    def visit(module):
        if module in on_path:
            raise AssertionError(" -> ".join([*on_path[on_path.index(module):], module]))
        if module in done or module not in graph:
            return
        on_path.append(module)
        for imported in graph[module]:
            visit(imported)
        on_path.pop()
        done.add(module)

    for module in graph:
        visit(module)


# room -> the rooms it may import from (besides itself and the base: runner.errors, runner.keras2).
ALLOWED = {
    "models": {"models"}, "data": {"data"},
    "runner.config": {"runner.device.workers", "runner.fit.network", "models", "data"},
    "runner.ascend": {"runner.record.run_folder"},
    "runner.record": {"runner.config", "runner.ascend"},
    "runner.device": {"runner.config"},
    "runner.fit": {"runner.config", "runner.ascend", "runner.record", "runner.device", "models", "data"},
}


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_the_rooms_below_it(room):
    """Nothing below runner.train imports it or the after-training tools; the run's record and the
    devices import nothing of the fit; models/ and data/ know only runner.errors and runner.keras2."""
    base = {"runner.errors", "runner.keras2"}
    allowed = {room, *ALLOWED[room]}
    wrong = {
        f"{module} -> {imported}"
        for module, imported_modules in imports().items() if module.startswith(room)
        for imported in imported_modules
        if imported not in base and not any(imported == a or imported.startswith(a + ".") for a in allowed)
    }
    assert not wrong, sorted(wrong)


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
    assert npu_options(compose_config([f"precision={mode}"]))["precision_mode"] == mode
    # float16 on the NPU is what needs loss scaling; bf16 and float32 do not.
    assert row.npu_loss_scaled == (row.gpu_policy == "mixed_float16")
