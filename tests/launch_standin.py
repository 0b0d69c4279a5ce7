"""A test-only stand-in for the handful of `launch` / `launch_ros` classes our launch files use.

ROS 2's launch packages are not installable here (and PyPI's `launch` is an unrelated program), so
tests import our launch files with these classes in their place, resolve what the description
declares, and turn each Node into the same command line `launch_ros` would run.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class LaunchDescription:
    def __init__(self, entities=None):
        self.entities = list(entities or [])


@dataclass
class DeclareLaunchArgument:
    name: str
    default_value: object = None
    description: str = ""


@dataclass
class SetEnvironmentVariable:
    name: str
    value: object


@dataclass
class LaunchConfiguration:
    variable_name: str

    def perform(self, context) -> str:
        return str(context.launch_configurations[self.variable_name])


@dataclass
class OpaqueFunction:
    function: object


@dataclass
class LaunchContext:
    launch_configurations: dict


@dataclass
class Node:
    package: str
    executable: str
    name: str = ""
    namespace: object = ""
    parameters: list = field(default_factory=list)
    remappings: list = field(default_factory=list)
    output: str = "log"
    arguments: list = field(default_factory=list)


@dataclass
class LifecycleNode(Node):
    """launch_ros's LifecycleNode: a Node whose transitions launch can request (not modelled)."""


def _modules() -> dict[str, types.ModuleType]:
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    return {
        "launch": module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                 OpaqueFunction=OpaqueFunction, SetEnvironmentVariable=SetEnvironmentVariable),
        "launch.substitutions": module("launch.substitutions", LaunchConfiguration=LaunchConfiguration),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", LifecycleNode=LifecycleNode, Node=Node),
    }


@contextmanager
def standin_modules(share_dir: Path):
    """Install the stand-in modules (and a share directory for roma_ros) while importing."""
    saved = {name: sys.modules.get(name) for name in _modules()}
    import ament_index_python.packages as packages

    original_share = packages.get_package_share_directory
    sys.modules.update(_modules())
    packages.get_package_share_directory = (
        lambda pkg: str(share_dir) if pkg == "roma_ros" else original_share(pkg))
    try:
        yield
    finally:
        packages.get_package_share_directory = original_share
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def load_launch_description(path: Path, share_dir: Path) -> LaunchDescription:
    with standin_modules(share_dir):
        spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()


class Resolved:
    """A launch description with its arguments resolved (defaults, then overrides)."""

    def __init__(self, description: LaunchDescription, overrides: dict[str, str] | None = None):
        self.arguments = {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}
        unknown = set(overrides or {}) - set(self.arguments)
        if unknown:
            raise KeyError(f"not declared by the launch file: {sorted(unknown)}")
        self.values = {name: arg.default_value for name, arg in self.arguments.items()}
        self.values.update(overrides or {})
        self.environment = {e.name: self.resolve(e.value) for e in description.entities
                            if isinstance(e, SetEnvironmentVariable)}
        entities = []
        for entity in description.entities:  # like launch, an OpaqueFunction runs once arguments are set
            if isinstance(entity, OpaqueFunction):
                entities += entity.function(LaunchContext(dict(self.values))) or []
            else:
                entities.append(entity)
        self.nodes = [e for e in entities if isinstance(e, Node)]

    def resolve(self, value) -> str:
        if isinstance(value, LaunchConfiguration):
            return str(self.values[value.variable_name])
        if isinstance(value, (list, tuple)):
            return "".join(self.resolve(v) for v in value)
        return str(value)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def parameters(self, node: Node) -> tuple[list[str], dict[str, str]]:
        files, values = [], {}
        for entry in node.parameters:
            if isinstance(entry, dict):
                values.update({k: self.resolve(v) for k, v in entry.items()})
            else:
                files.append(self.resolve(entry))
        return files, values

    def remappings(self, node: Node) -> dict[str, str]:
        return {self.resolve(a): self.resolve(b) for a, b in node.remappings}

    def command(self, node: Node, executable_dir: Path, tmp_dir: Path) -> list[str]:
        """The command launch_ros would run for `node`: like launch_ros, parameter dicts go into
        a generated YAML file, each substituted string value parsed as YAML ('false' -> False)."""
        cmd = [str(executable_dir / node.executable), "--ros-args"]
        if node.name:
            cmd += ["-r", f"__node:={node.name}"]
        namespace = self.resolve(node.namespace)
        if namespace:
            cmd += ["-r", f"__ns:=/{namespace.strip('/')}"]
        files, values = self.parameters(node)
        for path in files:
            cmd += ["--params-file", path]
        if values:
            generated = tmp_dir / f"{node.name or node.executable}_launch_params.yaml"
            typed = {k: yaml.safe_load(v) if v != "" else "" for k, v in values.items()}
            generated.write_text(yaml.safe_dump({"/**": {"ros__parameters": typed}}))
            cmd += ["--params-file", str(generated)]
        for source, target in self.remappings(node).items():
            cmd += ["-r", f"{source}:={target}"]
        return cmd
