"""`roma profile import`: the authors' streaming prompt from a local clone of their code (no torch, no rclpy).

The system prompt the released ROMA checkpoint was trained with lives in the authors' fork of
LLaMA-Factory (`src/llamafactory/data/template.py`, the `register_template(name="streaming_mix", ...)`
call) and is not shipped with roma_ros. This module reads that file as text, parses it with `ast`
(nothing of it is imported or executed) and takes the literal values of the call's keywords:

- `default_system`: the system prompt, exactly as written. Their encoder uses it verbatim
  (`system or self.default_system`, no stripping), so leading and trailing whitespace is kept.
- `format_system`: the system turn; `{{content}}` is where the system prompt goes.
- `format_query` (the user turn in their streaming encoder; `format_user` when absent): the part
  before `{{content}}` opens the user turn that holds the stream, the part after it ends the user
  turn and opens the assistant turn.
- `format_answer`: checked against the end token and the turn that resumes after an answer.
- `stop_words`: the first one ends an answer.
- `format_prefix`: tokens before the system turn, when the template has any.

They become a `roma_profile.json` on top of the built-in `roma-release` profile
(`roma_ros/core/profile.py`): `prompt.system_prompt`, `prefix_template` (prefix + system turn with
`{system}` + user-turn opening), `assistant_prefix` and `end_token`. Values that differ from the
built-in ones are kept and reported as warnings.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from roma_ros.core.profile import PROFILE_FILE_NAME, RELEASE, ProfileError, builtin_profile, profile_from_file

DEFAULT_TEMPLATE = "streaming_mix"
TEMPLATE_CALLS = ("register_template", "_register_template")
FORMATTERS = ("StringFormatter", "EmptyFormatter", "FunctionFormatter")
# Where the template file sits in a clone of the authors' repository (and in LLaMA-Factory).
CANDIDATE_PATHS = ("src/llamafactory/data/template.py", "llamafactory/data/template.py",
                   "data/template.py", "template.py")
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", "build", "dist"}
PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
CONTENT = "{{content}}"
PROMPT_KEYS = ("system_prompt", "prefix_template", "assistant_prefix", "end_token")


class ProfileImportError(ValueError):
    """The source cannot be imported: no template file, no such template, or values we cannot read."""


# ---- finding the template file ----------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileImportError(f"cannot read {path}: {exc}") from None


def _defines(path: Path, template: str) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return "register_template" in text and template in text


def find_template_file(source: str | Path, template: str = DEFAULT_TEMPLATE) -> Path:
    """The template file in `source`: the file itself, a known place under a clone's root, or
    the first `template.py` below it that registers `template` (then any that registers templates)."""
    source = Path(source).expanduser()
    if source.is_file():
        return source
    if not source.is_dir():
        raise ProfileImportError(f"{source} does not exist: give the root of a local clone of the authors' "
                                 f"repository or its template.py")
    for rel in CANDIDATE_PATHS:
        path = source / rel
        if path.is_file() and "register_template" in _read_text(path):
            return path
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        if "template.py" in filenames:
            found.append(Path(dirpath) / "template.py")
    for path in found:  # breadth of the walk: shallower, alphabetical first
        if _defines(path, template):
            return path
    for path in found:
        if _defines(path, "register_template"):
            return path
    raise ProfileImportError(f"no template.py with register_template(...) calls under {source} (looked at "
                             f"{', '.join(CANDIDATE_PATHS)} and every template.py below it): is it a clone of "
                             f"the authors' repository?")


# ---- reading the register_template(...) calls -------------------------------------------------
def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """Top-level `NAME = <expression>` assigned exactly once, so `default_system=NAME` can be read."""
    seen: dict[str, list[ast.expr]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            seen.setdefault(stmt.targets[0].id, []).append(stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            seen.setdefault(stmt.target.id, []).append(stmt.value)
    return {name: values[0] for name, values in seen.items() if len(values) == 1}


def _template_name(call: ast.Call) -> str | None:
    node = next((kw.value for kw in call.keywords if kw.arg == "name"), call.args[0] if call.args else None)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None  # e.g. name=name inside a helper: not a registration we can read


def _registrations(tree: ast.Module) -> dict[str, list[ast.Call]]:
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in TEMPLATE_CALLS:
            name = _template_name(node)
            if name is not None:
                calls.setdefault(name, []).append(node)
    return calls


class _Reader:
    def __init__(self, path: Path, template: str, call: ast.Call, constants: dict[str, ast.expr]):
        self.path, self.template, self.constants = path, template, constants
        self.keywords = {kw.arg: kw.value for kw in call.keywords if kw.arg is not None}

    def where(self, node: ast.AST) -> str:
        return f"{self.path}:{getattr(node, 'lineno', '?')}"

    def literal(self, key: str, node: ast.expr):
        """The value of `node`, a literal or a module-level name bound once to a literal."""
        value, shown = node, ast.unparse(node)[:80]
        if isinstance(node, ast.Name) and node.id in self.constants:
            value = self.constants[node.id]
            shown = f"{node.id} = {ast.unparse(value)[:80]}"
        try:
            return ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ProfileImportError(
                f"{self.where(node)}: {key} of template {self.template!r} is not a literal "
                f"({shown!r}); it cannot be read without running the authors' code") from None

    def slots(self, key: str) -> list | None:
        """The `slots` list of `key=StringFormatter(slots=[...])`, or None when the keyword is absent."""
        node = self.keywords.get(key)
        if node is None:
            return None
        if not (isinstance(node, ast.Call) and _call_name(node) in FORMATTERS):
            raise ProfileImportError(f"{self.where(node)}: {key} of template {self.template!r} is not a "
                                     f"{' / '.join(FORMATTERS)}(...) call: {ast.unparse(node)[:80]!r}")
        slots_node = next((kw.value for kw in node.keywords if kw.arg == "slots"), node.args[0] if node.args else None)
        if slots_node is None:
            return []
        slots = self.literal(f"{key} slots", slots_node)
        if isinstance(slots, str):
            slots = [slots]
        if not isinstance(slots, (list, tuple)):
            raise ProfileImportError(f"{self.where(slots_node)}: {key} slots of template {self.template!r} "
                                     f"are not a list: {slots!r}")
        return list(slots)


def _slot_text(reader: _Reader, key: str, slots: list, placeholder: bool) -> str:
    """The slots as one string; `{"token": T}` elements become T. Placeholders other than a single
    `{{content}}` (and set elements such as `{"eos_token"}`) are refused: we would not know what
    the model saw there."""
    parts = []
    for slot in slots:
        if isinstance(slot, str):
            parts.append(slot)
        elif isinstance(slot, dict) and set(slot) == {"token"} and isinstance(slot["token"], str):
            parts.append(slot["token"])
        else:
            raise ProfileImportError(f"{reader.path}: {key} of template {reader.template!r} has the slot {slot!r}, "
                                     f"which is resolved by the tokenizer at run time; roma_ros cannot import it")
    text = "".join(parts)
    names = PLACEHOLDER.findall(text)
    unknown = sorted({n for n in names if n != "content"})
    if unknown:
        raise ProfileImportError(f"{reader.path}: {key} of template {reader.template!r} uses placeholders "
                                 f"{', '.join('{{' + n + '}}' for n in unknown)} in {text!r}; "
                                 f"only {CONTENT} is understood")
    if placeholder and names.count("content") != 1:
        raise ProfileImportError(f"{reader.path}: {key} of template {reader.template!r} must hold {CONTENT} exactly "
                                 f"once, got {text!r}")
    if not placeholder and names:
        raise ProfileImportError(f"{reader.path}: {key} of template {reader.template!r} must not hold a "
                                 f"placeholder, got {text!r}")
    return text


def _format_literal(text: str) -> str:
    """Escape braces so that `str.format(system=...)` reproduces `text`."""
    return text.replace("{", "{{").replace("}", "}}")


# ---- where it came from -----------------------------------------------------------------------
def _git_root(path: Path) -> Path | None:
    for parent in [path.parent, *path.parent.parents]:
        if (parent / ".git").exists():
            return parent
    return None


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    try:  # a worktree or submodule: "gitdir: <path>"
        line = dot_git.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if line.startswith("gitdir:"):
        target = Path(line[len("gitdir:"):].strip())
        return target if target.is_absolute() else root / target
    return None


def _read_head(git_dir: Path) -> str | None:
    """HEAD's commit from the files, for when git is missing or refuses the directory."""
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head[len("ref:"):].strip()
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = git_dir / (git_dir / "commondir").read_text(encoding="utf-8").strip()
        for base in (git_dir, common):
            if (base / ref).is_file():
                return (base / ref).read_text(encoding="utf-8").strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref:
                    return sha
    except (OSError, UnicodeDecodeError):
        pass
    return None


def git_commit(path: Path) -> tuple[str | None, bool]:
    """(commit of the checkout holding `path`, whether `path` differs from it); (None, False) outside git."""
    root = _git_root(path.resolve())
    if root is None:
        return None, False
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        lines = result.stdout.split("\n")
        # git may have skipped an unusable .git and found a checkout further up: not ours then
        if result.returncode == 0 and len(lines) >= 2 and Path(lines[0]).resolve() == root and lines[1].strip():
            diff = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", str(path.resolve())],
                                  capture_output=True, timeout=10)
            return lines[1].strip(), diff.returncode == 1
    except (OSError, subprocess.SubprocessError):
        pass
    git_dir = _git_dir(root)
    return (_read_head(git_dir) if git_dir is not None else None), False


# ---- the import -------------------------------------------------------------------------------
def import_profile(source: str | Path, template: str = DEFAULT_TEMPLATE) -> dict:
    """A profile dict (`roma_profile.json` content) from the template `template` in `source`, plus a
    `warnings` list (not part of the file). Raises ProfileImportError when it cannot be read."""
    path = find_template_file(source, template)
    text = _read_text(path)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ProfileImportError(f"{path} is not valid Python ({exc.msg}, line {exc.lineno})") from None
    calls = _registrations(tree)
    if template not in calls:
        names = ", ".join(sorted(calls)) or "none"
        raise ProfileImportError(f"{path} registers no template {template!r}; templates there: {names}")
    if len(calls[template]) > 1:
        lines = ", ".join(str(c.lineno) for c in calls[template])
        raise ProfileImportError(f"{path} registers template {template!r} more than once (lines {lines})")
    reader = _Reader(path, template, calls[template][0], _module_constants(tree))
    warnings: list[str] = []
    prompt: dict[str, str] = {}

    if "default_system" not in reader.keywords:
        raise ProfileImportError(f"{reader.where(calls[template][0])}: template {template!r} has no "
                                 f"default_system keyword "
                                 f"(a template without a system prompt, or one passed through a helper)")
    system = reader.literal("default_system", reader.keywords["default_system"])
    if not isinstance(system, str):
        raise ProfileImportError(f"{path}: default_system of template {template!r} is not a string: {system!r}")
    if not system.strip():
        raise ProfileImportError(f"{path}: default_system of template {template!r} is empty")
    prompt["system_prompt"] = system

    prefix_slots = reader.slots("format_prefix")
    prefix = _slot_text(reader, "format_prefix", prefix_slots, placeholder=False) if prefix_slots else ""
    system_slots = reader.slots("format_system")
    query_key = "format_query"
    query_slots = reader.slots(query_key)
    if query_slots is None and reader.slots("format_user") is not None:
        query_key = "format_user"
        query_slots = reader.slots(query_key)
        warnings.append(f"template {template!r} has no format_query (the user turn of the authors' streaming "
                        f"encoder): used format_user")
    query_open = query_close = None
    if query_slots is not None:
        query_open, query_close = _slot_text(reader, query_key, query_slots, placeholder=True).split(CONTENT)
        prompt["assistant_prefix"] = query_close
    else:
        warnings.append(f"template {template!r} has no format_query or format_user: the user and assistant "
                        f"turns stay roma-release's")
    if system_slots is not None and query_open is not None:
        before, after = _slot_text(reader, "format_system", system_slots, placeholder=True).split(CONTENT)
        prompt["prefix_template"] = (_format_literal(prefix + before) + "{system}"
                                     + _format_literal(after + query_open))
    elif system_slots is None:
        warnings.append(f"template {template!r} has no format_system: the system turn stays roma-release's")

    stop_words = None
    if "stop_words" in reader.keywords:
        stop_words = reader.literal("stop_words", reader.keywords["stop_words"])
        if isinstance(stop_words, str):
            stop_words = [stop_words]
        if not isinstance(stop_words, (list, tuple)) or not all(isinstance(w, str) for w in stop_words):
            raise ProfileImportError(f"{path}: stop_words of template {template!r} are not a list of strings: "
                                     f"{stop_words!r}")
    if stop_words:
        prompt["end_token"] = stop_words[0]
        if len(stop_words) > 1:
            warnings.append(f"template {template!r} has {len(stop_words)} stop words {list(stop_words)}: "
                            f"{stop_words[0]!r} ends an answer, the others are not used")
    else:
        warnings.append(f"template {template!r} has no stop_words: the end token stays roma-release's")

    release = builtin_profile(RELEASE).prompt
    for key in ("prefix_template", "assistant_prefix", "end_token"):
        if key in prompt and prompt[key] != getattr(release, key):
            warnings.append(f"{key} {prompt[key]!r} differs from roma-release's built-in {getattr(release, key)!r}: "
                            f"the imported value is used")
    answer_slots = reader.slots("format_answer")
    if answer_slots is not None and query_open is not None:
        try:
            answer_close = _slot_text(reader, "format_answer", answer_slots, placeholder=True).split(CONTENT)[1]
        except ProfileImportError as exc:
            warnings.append(f"format_answer not checked: {exc}")
        else:
            end = prompt.get("end_token", release.end_token)
            if not answer_close.startswith(end):
                warnings.append(f"format_answer {answer_close!r} after the answer does not start with the end "
                                f"token {end!r}")
            elif answer_close[len(end):] + query_open != release.resume_user:
                warnings.append(f"after an answer the template resumes with {answer_close[len(end):] + query_open!r}, "
                                f"roma-release with {release.resume_user!r}: resume_user is not imported")

    prompt = {key: prompt[key] for key in PROMPT_KEYS if key in prompt}
    commit, modified = git_commit(path)
    origin = f"imported by `roma profile import` from {path.resolve()}, template {template!r}"
    if commit:
        origin += f", git commit {commit}" + (" (file modified since)" if modified else "")
    return {"name": RELEASE, "base": RELEASE, "source": origin, "prompt": prompt, "warnings": warnings}


def write_profile(profile: dict, checkpoint_dir: str | Path | None = None, output: str | Path | None = None,
                  force: bool = False) -> Path:
    """Write `profile` (without its `warnings`) as `roma_profile.json` into `checkpoint_dir`, or to
    `output`. An existing file is kept unless `force`. The file is checked to load before it is
    put in place."""
    if (checkpoint_dir is None) == (output is None):
        raise ProfileImportError("give either a checkpoint directory or an output file")
    if checkpoint_dir is not None:
        directory = Path(checkpoint_dir).expanduser()
        if not directory.is_dir():
            raise ProfileImportError(f"checkpoint directory {directory} does not exist")
        target = directory / PROFILE_FILE_NAME
    else:
        target = Path(output).expanduser()
        if target.is_dir():
            raise ProfileImportError(f"{target} is a directory: use --checkpoint {target} to write "
                                     f"{target / PROFILE_FILE_NAME}")
        if not target.parent.is_dir():
            raise ProfileImportError(f"directory {target.parent} does not exist")
    if target.exists() and not force:
        raise ProfileImportError(f"{target} already exists; use --force to replace it")
    data = {k: v for k, v in profile.items() if k != "warnings"}
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            profile_from_file(tmp)
        except ProfileError as exc:
            raise ProfileImportError(f"the profile does not load: {exc}") from None
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# ---- command line -----------------------------------------------------------------------------
def cmd_profile_import(args: argparse.Namespace) -> int:
    """Import the authors' streaming template into a roma_profile.json; 0 on success, 1 on error."""
    try:
        profile = import_profile(args.source, args.template)
        path = write_profile(profile, checkpoint_dir=args.checkpoint, output=args.output, force=args.force)
    except (ProfileImportError, ProfileError, OSError) as exc:
        print(f"roma profile import: {exc}", file=sys.stderr)
        return 1
    prompt = profile["prompt"]
    system = prompt["system_prompt"]
    first = system.strip().splitlines()[0] if system.strip() else ""
    if len(first) > 160:
        first = first[:157] + "..."
    print(f"wrote {path}: profile {profile['name']} (base {profile['base']}), {profile['source']}")
    print(f"  system prompt: {len(system)} characters, first line: {first!r}")
    for key in ("prefix_template", "assistant_prefix", "end_token"):
        if key in prompt:
            print(f"  {key}: {prompt[key]!r}")
    for warning in profile.get("warnings", []):
        print(f"roma profile import: warning: {warning}", file=sys.stderr)
    print(f"use it with model_profile:=auto (beside the checkpoint) or model_profile:={path}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add `profile import` to a `roma` sub-command set (`build_parser`'s `sub`)."""
    profile = subparsers.add_parser("profile", help="model profiles: import the authors' prompt")
    psub = profile.add_subparsers(dest="profile_command", required=True)
    imp = psub.add_parser(
        "import", help="write a roma_profile.json from a local clone of the authors' ROMA repository",
        description="Read the authors' chat template (src/llamafactory/data/template.py of a local clone) as "
                    "text, without running it, and write their streaming system prompt and turn strings into a "
                    "roma_profile.json on top of the roma-release profile.")
    imp.add_argument("source", metavar="SOURCE",
                     help="root of a local clone of the authors' repository, or its template.py")
    where = imp.add_mutually_exclusive_group(required=True)
    where.add_argument("--checkpoint", metavar="DIR", help=f"write DIR/{PROFILE_FILE_NAME} (beside the checkpoint)")
    where.add_argument("-o", "--output", metavar="FILE", help="write the profile to FILE")
    imp.add_argument("--template", default=DEFAULT_TEMPLATE, metavar="NAME",
                     help=f"registered template to import (default: {DEFAULT_TEMPLATE})")
    imp.add_argument("--force", action="store_true", help="replace an existing file")
    imp.set_defaults(func=cmd_profile_import)
    return profile
