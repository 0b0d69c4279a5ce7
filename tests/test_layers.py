"""The import direction of the package: core <- engine <- pipeline <- nodes / eval / training /
tools. A module imports only its own layer or those below it (function-level imports count too),
and the layers below the nodes never import rclpy, so the evaluator, the benchmarks and the
training run the nodes' code without a ROS graph."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "roma_ros"

# package part -> layer; top-level modules are named without ".py"
LAYERS = {
    "core": 0,
    "engine": 1,
    "pipeline": 2, "params": 2, "bagio": 2, "msg": 2, "srv": 2, "action": 2,
    "nodes": 3, "eval": 3, "training": 3, "tuning": 3, "dds": 3, "memory": 3,
    "client": 4, "demo": 4, "doctor": 4, "cli": 4, "examples": 4,
}
# same-layer parts that must not import each other (the value: parts a part may not import)
SIBLINGS_FORBIDDEN = {
    "nodes": {"eval", "training", "tuning"},
    "eval": {"nodes", "training", "tuning"},
    "tuning": {"nodes"},  # tuning replays bags with eval's runner, never through a node
    "training": {"nodes"},  # training scores with eval's metrics, never through a node
}
RCLPY_FREE = {"core", "engine", "pipeline", "params", "bagio"}


def part_of(module: str) -> str | None:
    """'roma_ros.engine.roma' -> 'engine'; None for modules outside the package."""
    names = module.split(".")
    if names[0] != "roma_ros":
        return None
    return names[1] if len(names) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        part = rel.parts[0].removesuffix(".py")
        if part in ("__init__", "__main__") or "assets" in rel.parts:
            continue
        yield part, path


def test_every_part_of_the_package_has_a_layer():
    assert {part for part, _ in modules()} <= set(LAYERS), "a new package part needs a layer here"


def violations(part: str, path: Path) -> list[str]:
    out = []
    for line, module in imports(path):
        where = f"{path.name}:{line} imports {module}"
        if part in RCLPY_FREE and module.split(".")[0] == "rclpy":
            out.append(f"{where} (this layer stays rclpy-free)")
        target = part_of(module)
        if target is None or target == "__init__" or target == part:
            continue
        if LAYERS[target] > LAYERS[part]:
            out.append(f"{where} (upward: {part} is layer {LAYERS[part]}, {target} layer {LAYERS[target]})")
        elif target in SIBLINGS_FORBIDDEN.get(part, ()):
            out.append(f"{where} ({part} must not depend on {target})")
    return out


@pytest.mark.parametrize("part,path", list(modules()), ids=lambda v: str(v) if isinstance(v, str) else v.name)
def test_imports_point_down(part, path):
    assert violations(part, path) == []


def test_the_check_catches_an_upward_import_and_rclpy_below_the_nodes(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from roma_ros.nodes.engine_node import EngineNode\n    import rclpy\n"
                      "from roma_ros.eval.metrics import x\n")
    assert len(violations("engine", module)) == 3
    found = violations("nodes", module)
    assert len(found) == 1 and "must not depend on eval" in found[0]
