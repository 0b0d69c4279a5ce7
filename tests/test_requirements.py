"""requirements/runtime.txt: what a ROS 2 workspace installs with pip beside its ROS install.

It must pin the lock's versions and must never bring ROS, colcon or test tools with it. The
resolved set is computed offline, by walking the dependency metadata of the installed
distributions (this venv is installed from requirements/lock.txt), so the test needs no registry.
"""
import ast
import importlib.metadata as md
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
REQ = REPO / "requirements"
RUNTIME = REQ / "runtime.txt"

FORBIDDEN_PREFIXES = ("ros-", "colcon", "pytest")
FORBIDDEN_NAMES = {"hypothesis", "catkin-pkg", "coverage"}
# Imported by roma_ros but not installable from any registry here: used when present.
OPTIONAL_IMPORTS = {"tensorrt"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file, following `-r` includes."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            lines += requirement_lines(path.parent / line[3:].strip())
        else:
            assert not line.startswith("-"), f"{path.name}: unexpected option {line!r}"
            lines.append(line)
    return lines


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in requirement_lines(REQ / "lock.txt"):
        name, version = line.split("==")
        pins[canonical(name)] = version
    return pins


def runtime_requirements() -> list[Requirement]:
    return [Requirement(line) for line in requirement_lines(RUNTIME)]


def release(version: str) -> str:
    return Version(version).public  # 2.13.0+cpu -> 2.13.0, as scripts/freeze.py pins it


def resolved_set() -> dict[str, str]:
    """Every distribution `pip install -r requirements/runtime.txt` brings, with its version."""
    seen: dict[str, str] = {}
    todo = [(req, "") for req in runtime_requirements()]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonical(req.name)
        extras = sorted(req.extras)
        key = name if not extras else f"{name}[{','.join(extras)}]"
        if key in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            pytest.fail(f"{req.name} (needed by runtime.txt) is not installed: run `make setup`")
        seen[key] = seen[name] = dist.version
        for spec in dist.requires or []:
            for wanted in extras or [""]:
                todo.append((Requirement(spec), wanted))
    return {name: version for name, version in seen.items() if "[" not in name}


@pytest.fixture(scope="module")
def resolved():
    return resolved_set()


def test_runtime_pins_every_requirement_to_the_lock():
    lock = lock_pins()
    reqs = runtime_requirements()
    assert reqs
    for req in reqs:
        spec = str(req.specifier)
        assert spec.startswith("==") and "," not in spec, f"{req}: runtime.txt pins exact versions"
        assert canonical(req.name) in lock, f"{req.name} is not in lock.txt"
        assert spec[2:] == lock[canonical(req.name)], f"{req} but lock.txt has {lock[canonical(req.name)]}"


def test_resolved_set_has_no_ros_colcon_or_test_tools(resolved):
    assert "torch" in resolved and "numpy" in resolved and "rosbags" in resolved
    bad = sorted(name for name in resolved
                 if name.startswith(FORBIDDEN_PREFIXES) or name in FORBIDDEN_NAMES)
    assert not bad, f"installing requirements/runtime.txt would bring {bad}"


def test_resolved_set_is_what_the_lock_pins(resolved):
    """The walk read the metadata the lock installs, and the lock holds the whole runtime set."""
    lock = lock_pins()
    missing = sorted(set(resolved) - set(lock))
    assert not missing, f"runtime.txt pulls in {missing}, which lock.txt does not pin"
    stale = {name: (release(version), lock[name]) for name, version in resolved.items()
             if release(version) != lock[name]}
    assert not stale, f"installed != lock.txt (run `make setup`): {stale}"


def test_runtime_covers_every_third_party_import(resolved):
    """Each module roma_ros imports comes from ROS (package.xml) or from runtime.txt's set."""
    ros_names = {el.text.strip() for el in ET.parse(REPO / "package.xml").getroot()
                 if el.tag.endswith("depend") and el.text}
    providers = md.packages_distributions()
    modules = set()
    for path in (REPO / "roma_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"roma_ros"} | OPTIONAL_IMPORTS
    uncovered = {}
    for module in sorted(modules):
        dists = [canonical(d) for d in providers.get(module, [])]
        if module in ros_names or any(d.startswith("ros-") for d in dists):
            continue
        if not any(d in resolved for d in dists):
            uncovered[module] = dists
    assert not uncovered, f"imported by roma_ros but not installed by runtime.txt: {uncovered}"


def test_package_xml_and_base_in_point_at_runtime_txt():
    comments = [c.text for c in ET.parse(REPO / "package.xml",
                                         ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
                .getroot().iter(ET.Comment)]
    referenced = {m for c in comments for m in re.findall(r"requirements/[\w./-]+", c)}
    assert referenced == {"requirements/runtime.txt"}, referenced
    for path in referenced:
        assert (REPO / path).is_file(), path
    # The pip names package.xml's comment lists are in the file it points to.
    note = next(c for c in comments if "requirements/runtime.txt" in c)
    named = re.findall(r"[a-z][\w-]*", note.split(":")[0])
    pinned = {canonical(r.name) for r in runtime_requirements()}
    assert named and set(map(canonical, named)) <= pinned, named
    # requirements/base.in (what `make lock` resolves) includes it, so the lock keeps its pins.
    assert "-r runtime.txt" in (REQ / "base.in").read_text().splitlines()
