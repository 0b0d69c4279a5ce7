"""`roma profile import` on a stand-in of the authors' template file (written by us, parsed, never executed)."""
import argparse
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roma_ros.core.profile import PROFILE_FILE_NAME, RELEASE, builtin_profile, profile_from_file, resolve_profile
from roma_ros.core.profile_import import ProfileImportError, add_cli, import_profile, write_profile

UPSTREAM = (Path(__file__).parent / "fixtures" / "upstream_roma").resolve()
TEMPLATE = UPSTREAM / "src" / "llamafactory" / "data" / "template.py"
SYSTEM = ("You are Lighthouse, a keeper who watches a harbour camera and its microphone {each} second.\n"
          "    [ships] 1. Stay silent until a ship enters or leaves the harbour; then name it in one sentence.\n"
          "    [weather] 2. When fog rolls in, say exactly \"fog\".\n"
          "    ")
RELEASE_PROMPT = builtin_profile(RELEASE).prompt


def test_the_fixture_cannot_run_so_it_is_only_parsed():
    with pytest.raises(ModuleNotFoundError, match="llamafactory_does_not_exist"):
        runpy.run_path(str(TEMPLATE))
    import_profile(UPSTREAM)
    assert "llamafactory_does_not_exist" not in sys.modules


@pytest.mark.parametrize("source", [UPSTREAM, TEMPLATE, str(UPSTREAM)], ids=["clone", "file", "str"])
def test_imports_the_streaming_template_exactly(source):
    profile = import_profile(source)
    assert profile["name"] == profile["base"] == RELEASE
    assert str(TEMPLATE) in profile["source"] and "'streaming_mix'" in profile["source"]
    # exactly the keys that were extracted, with the exact strings: indentation, braces, trailing spaces
    assert profile["prompt"] == {
        "system_prompt": SYSTEM,
        "prefix_template": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
        "assistant_prefix": "<|im_end|>\n<|im_start|>assistant\n",
        "end_token": "<|im_end|>",
    }
    # the stand-in's turn strings are the released ones: they agree with the built-in
    for key in ("prefix_template", "assistant_prefix", "end_token"):
        assert profile["prompt"][key] == getattr(RELEASE_PROMPT, key)
    assert profile["warnings"] == []


def test_written_profile_resolves_with_the_imported_prompt(tmp_path):
    (tmp_path / "roma_prompt.json").write_text(json.dumps({"system_prompt": "legacy"}))  # not overlaid
    path = write_profile(import_profile(UPSTREAM), checkpoint_dir=tmp_path)
    assert path == tmp_path / PROFILE_FILE_NAME
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    assert set(data) == {"name", "base", "source", "prompt"}  # no warnings in the file
    for profile in (resolve_profile("auto", str(tmp_path)), resolve_profile(str(path))):
        assert profile.name == RELEASE and profile.source == str(path)
        assert profile.prompt.system_prompt == SYSTEM
        assert profile.prompt_source == str(path)
        assert profile.warnings == []  # in particular no neutral-prompt warning
        assert profile.frames == builtin_profile(RELEASE).frames and profile.audio == builtin_profile(RELEASE).audio
        # the fields not imported stay roma-release's
        assert profile.prompt.instruction_template == RELEASE_PROMPT.instruction_template
        assert profile.prompt.unfinished_close == RELEASE_PROMPT.unfinished_close
        # braces in the prompt are data, not format fields
        assert profile.prompt.prefix_template.format(system=profile.prompt.system_prompt) == (
            "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n")
    assert profile_from_file(path).prompt == resolve_profile(str(path)).prompt


def test_refuses_to_overwrite_without_force(tmp_path):
    profile = import_profile(UPSTREAM)
    write_profile(profile, checkpoint_dir=tmp_path)
    (tmp_path / PROFILE_FILE_NAME).write_text("{}\n")
    with pytest.raises(ProfileImportError, match="already exists.*--force"):
        write_profile(profile, checkpoint_dir=tmp_path)
    assert (tmp_path / PROFILE_FILE_NAME).read_text() == "{}\n"  # untouched
    write_profile(profile, checkpoint_dir=tmp_path, force=True)
    assert json.loads((tmp_path / PROFILE_FILE_NAME).read_text())["prompt"]["system_prompt"] == SYSTEM
    assert sorted(p.name for p in tmp_path.iterdir()) == [PROFILE_FILE_NAME]  # no temporary files left
    with pytest.raises(ProfileImportError, match="does not exist"):
        write_profile(profile, checkpoint_dir=tmp_path / "missing")
    with pytest.raises(ProfileImportError, match="is a directory"):
        write_profile(profile, output=tmp_path)
    with pytest.raises(ProfileImportError, match="either"):
        write_profile(profile)


def test_unknown_template_lists_the_ones_there():
    # the helper's own call (name=name) is not a registration; the helper's use is
    with pytest.raises(ProfileImportError, match="no template 'streaming_v2'; templates there: computed_system, "
                                                 "harbour_night, helper_made, numbered_turns, qwen2_vl, "
                                                 "streaming_mix, tokenizer_prefix$"):
        import_profile(UPSTREAM, "streaming_v2")


def test_values_computed_by_code_are_refused_not_run():
    with pytest.raises(ProfileImportError, match=r"template.py:\d+: default_system of template 'computed_system' "
                                                 r"is not a literal .*SYSTEM_FROM_CODE"):
        import_profile(UPSTREAM, "computed_system")
    with pytest.raises(ProfileImportError, match="no default_system keyword"):
        import_profile(UPSTREAM, "helper_made")


def test_slots_we_do_not_understand_are_refused():
    with pytest.raises(ProfileImportError, match=r"placeholders \{\{idx\}\}.*only \{\{content\}\}"):
        import_profile(UPSTREAM, "numbered_turns")
    with pytest.raises(ProfileImportError, match="bos_token.*tokenizer"):
        import_profile(UPSTREAM, "tokenizer_prefix")


def test_a_template_unlike_the_release_is_imported_and_explained():
    profile = import_profile(UPSTREAM, "harbour_night")
    prompt = profile["prompt"]
    assert prompt["system_prompt"] == "Night shift: report every light you see."  # a module-level constant
    # prefix + system turn + the user-turn opening of format_user; literal braces escaped for str.format
    assert prompt["prefix_template"] == "<|night|><sys {{json}}>{system}</sys>\n<user {{lang}}>"
    assert prompt["prefix_template"].format(system="S") == "<|night|><sys {json}>S</sys>\n<user {lang}>"
    assert prompt["assistant_prefix"] == "</user>\n<bot>" and prompt["end_token"] == "</bot>"
    warnings = "\n".join(profile["warnings"])
    for expected in ("no format_query", "2 stop words", "prefix_template", "assistant_prefix",
                     "end_token '</bot>' differs", "resume_user is not imported"):
        assert expected in warnings
    qwen = import_profile(TEMPLATE, "qwen2_vl")  # no format_query, no format_answer
    assert qwen["prompt"]["system_prompt"] == "You are a helpful assistant."
    assert [w for w in qwen["warnings"] if "format_query" not in w] == []


def test_missing_sources_are_explained(tmp_path):
    with pytest.raises(ProfileImportError, match="no template.py with register_template"):
        import_profile(tmp_path)
    with pytest.raises(ProfileImportError, match="does not exist"):
        import_profile(tmp_path / "nowhere")
    broken = tmp_path / "template.py"
    broken.write_text("register_template(name='x'\n")
    with pytest.raises(ProfileImportError, match="not valid Python"):
        import_profile(broken)


def test_a_template_file_elsewhere_in_the_tree_is_found(tmp_path):
    other = tmp_path / "a" / "eval" / "template.py"
    other.parent.mkdir(parents=True)
    other.write_text("def register_eval_template(name):\n    pass\n")  # mentions no streaming template
    moved = tmp_path / "b" / "pkg" / "template.py"
    moved.parent.mkdir(parents=True)
    shutil.copy(TEMPLATE, moved)
    assert import_profile(tmp_path)["prompt"]["system_prompt"] == SYSTEM


def test_a_template_registered_twice_is_refused(tmp_path):
    twice = tmp_path / "template.py"
    twice.write_text("register_template(name='t', default_system='a')\n"
                     "register_template(name='t', default_system='b')\n")
    with pytest.raises(ProfileImportError, match=r"more than once \(lines 1, 2\)"):
        import_profile(twice, "t")


def test_the_source_names_the_git_commit(tmp_path):
    fake = tmp_path / "fake"  # a .git git itself refuses: the commit is read from its files
    (fake / ".git" / "refs" / "heads").mkdir(parents=True)
    (fake / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (fake / ".git" / "refs" / "heads" / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")
    shutil.copytree(UPSTREAM / "src", fake / "src")
    assert import_profile(fake)["source"].endswith("git commit 0123456789abcdef0123456789abcdef01234567")
    if shutil.which("git") is None:
        return
    real = tmp_path / "real"
    shutil.copytree(UPSTREAM / "src", real / "src")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "stand-in"]):
        subprocess.run(["git", "-C", str(real), *cmd], check=True, env=env, capture_output=True)
    sha = subprocess.run(["git", "-C", str(real), "rev-parse", "HEAD"], capture_output=True, text=True,
                         env=env).stdout.strip()
    source = import_profile(real)["source"]
    if "git commit" in source:  # a git that rejects the directory (ownership) falls back to the files
        assert source.endswith(f"git commit {sha}")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="roma")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_the_file_and_reports(tmp_path, capsys):
    assert _cli(["profile", "import", str(UPSTREAM), "--checkpoint", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / PROFILE_FILE_NAME}" in out
    assert f"system prompt: {len(SYSTEM)} characters, first line: {SYSTEM.splitlines()[0]!r}" in out
    assert resolve_profile("auto", str(tmp_path)).prompt.system_prompt == SYSTEM

    assert _cli(["profile", "import", str(UPSTREAM), "--checkpoint", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("roma profile import: ") and "already exists" in err and "Traceback" not in err
    assert _cli(["profile", "import", str(UPSTREAM), "--checkpoint", str(tmp_path), "--force"]) == 0
    capsys.readouterr()

    out_file = tmp_path / "elsewhere.json"
    assert _cli(["profile", "import", str(TEMPLATE), "-o", str(out_file), "--template", "harbour_night"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out_file}" in captured.out and "warning: " in captured.err
    assert json.loads(out_file.read_text())["prompt"]["end_token"] == "</bot>"

    assert _cli(["profile", "import", str(UPSTREAM), "-o", str(tmp_path / "x.json"), "--template", "nope"]) == 1
    assert "templates there: " in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    for argv in (["profile", "import", str(UPSTREAM)],  # neither --checkpoint nor -o
                 ["profile", "import", str(UPSTREAM), "--checkpoint", str(tmp_path), "-o", str(out_file)]):
        with pytest.raises(SystemExit):
            _cli(argv)


def test_the_roma_command_has_it(tmp_path, capsys):
    from roma_ros.cli import main

    assert main(["profile", "import", str(UPSTREAM), "-o", str(tmp_path / "p.json")]) == 0
    assert profile_from_file(tmp_path / "p.json").prompt.system_prompt == SYSTEM
