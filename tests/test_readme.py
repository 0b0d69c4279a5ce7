"""The README stays true to the code: parameters, commands, executables."""
from pathlib import Path

from roma_ros.cli import build_parser
from roma_ros.pipeline.engine import PARAMETERS as ENGINE
from roma_ros.pipeline.synchronizer import PARAMETERS as SYNCHRONIZER

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


def test_the_security_section_states_the_bounds_the_code_enforces():
    from roma_ros.core import audio_decode, image_decode, unit
    from roma_ros.core.log_text import LOG_TEXT_LIMIT
    from roma_ros.engine.session import MAX_ID_CHARS, RESERVED_ID_PREFIXES
    from roma_ros.pipeline import synchronizer as synchronizer_node

    section = README.split("## Security and input limits", 1)[1].split("\n## ", 1)[0]
    side = int(image_decode.MAX_SOURCE_PIXELS ** 0.5)
    assert side * side == image_decode.MAX_SOURCE_PIXELS == unit.MAX_FRAME_PIXELS
    stated = [f"{synchronizer_node.TEXT_LIMIT} characters", f"{side} x {side}", f"{LOG_TEXT_LIMIT} characters",
              f"{MAX_ID_CHARS} printable characters", f"at most {unit.MAX_FRAMES} frames",
              f"1-{audio_decode.MAX_CHANNELS} channels", f"{unit.MAX_UNIT_NS // 10**9} s]",
              f"{synchronizer_node.STARVED_UNITS} units in a row", f"{synchronizer_node.STARVED_ERROR_UNITS}: ERROR"]
    stated += [f"`{prefix}`" for prefix in RESERVED_ID_PREFIXES]
    for name in ("max_query_chars", "max_pending_queries", "max_queries_per_minute", "max_query_lead",
                 "max_concurrent_asks", "ask_timeout", "max_tasks", "stall_timeout", "jump_confirm_count"):
        default = (ENGINE.get(name) or SYNCHRONIZER[name])[0]
        stated.append(f"`{name}` ({default:g}" if isinstance(default, float) else f"`{name}` ({default})")
    missing = [text for text in stated if text not in section]
    assert not missing, missing
    assert (audio_decode.MIN_SAMPLE_RATE, audio_decode.MAX_SAMPLE_RATE) == (unit.MIN_SAMPLE_RATE, unit.MAX_SAMPLE_RATE)
    assert f"1 k-{unit.MAX_SAMPLE_RATE // 1000} kHz" in section


def test_the_table_of_contents_lists_every_section():
    import re

    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    sections = [h for h in re.findall(r"^## (.+)$", README, re.M) if h != "Contents"]
    listed = re.findall(r"^- \[(.+)\]\(#([^)]+)\)$", contents, re.M)
    assert [title for title, _ in listed] == sections
    for title, anchor in listed:  # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens
        assert anchor == re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"), title
