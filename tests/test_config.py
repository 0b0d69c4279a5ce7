"""config/roma.yaml documents and sets exactly the parameters the nodes declare."""
from pathlib import Path

import yaml

from roma_ros.pipeline.engine import PARAMETERS as ENGINE
from roma_ros.pipeline.synchronizer import PARAMETERS as SYNCHRONIZER

CONFIG = Path(__file__).resolve().parent.parent / "config" / "roma.yaml"


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def test_every_declared_parameter_is_in_the_yaml_with_its_default():
    config = yaml.safe_load(CONFIG.read_text())
    for key, declared in (("/**/synchronizer", SYNCHRONIZER), ("/**/engine", ENGINE)):
        values = flatten(config[key]["ros__parameters"])
        assert set(values) == set(declared), (key, set(values) ^ set(declared))
        for name, (default, _description) in declared.items():
            assert values[name] == default, (key, name, values[name], default)


def test_every_parameter_has_a_comment():
    lines = CONFIG.read_text().splitlines()
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.endswith(":"):
            key = stripped.split(":")[0]
            if key in ("reliability", "durability", "depth"):
                continue  # QoS triples are described once per block
            assert "#" in line, f"undocumented parameter line: {line!r}"
