"""The README stays true to the code: parameters, commands, executables."""
from pathlib import Path

from roma_ros.cli import build_parser
from roma_ros.nodes.engine_node import PARAMETERS as ENGINE
from roma_ros.nodes.synchronizer_node import PARAMETERS as SYNCHRONIZER

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_every_parameter_is_in_the_readme_table():
    for name in list(ENGINE) + list(SYNCHRONIZER):
        documented = f"`{name}`" in README or (name.startswith("qos.") and "qos.<topic>" in README)
        assert documented, name


def test_every_roma_command_is_documented():
    subcommands = build_parser()._subparsers._group_actions[0].choices
    for name in subcommands:
        assert f"`roma {name}" in README, name


def test_the_two_commands_exist_in_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    assert "make demo" in README and "make test" in README
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()
