"""The repository stands alone: no file cites documents or paths outside it, and every
"docs/model.md section N" that the code cites exists as a numbered heading of docs/model.md.

Files checked: what `git ls-files` lists as tracked, plus new files git does not ignore (so a file
is checked before its first commit); binary files and this file itself are skipped.
"""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
MODEL_DOC = REPO / "docs" / "model.md"

# Documents or paths that only exist outside this repository.
FORBIDDEN = [
    # the spec's name is assembled so that this guard does not itself read as a citation
    (re.compile("ROMA_" + "SPEC"), "cites the team's model spec, a document outside the repository"),
    (re.compile(r"(?:\.\.[/\\])+shared\b"), "path reaching outside the repository"),
    (re.compile(r"/work/shared\b"), "path reaching outside the repository"),
]
MD_LINK = re.compile(r"\]\(\s*<?([^)\s>#]+)")
CITATION = re.compile(
    r"docs/model\.md,?\s+(?:sections?\s*|§§?\s*)(\d+)(?:\s*(?:-|–|to)\s*(\d+))?", re.IGNORECASE)
HEADING = re.compile(r"^## (\d+) ", re.MULTILINE)


def _repo_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout (git ls-files failed: {exc})")
    paths = sorted({REPO / p for p in out.decode("utf-8", "surrogateescape").split("\0") if p})
    return [p for p in paths if p.is_file() and not p.is_symlink() and p.resolve() != THIS]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@pytest.fixture(scope="module")
def text_files() -> dict[str, str]:
    files = {}
    for path in _repo_files():
        text = _text(path)
        if text is not None:
            files[path.relative_to(REPO).as_posix()] = text
    assert files, "no text files found"
    return files


def _outside(base: Path, target: str) -> bool:
    """True if a relative link `target` written in a file in `base` leaves the repository."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("/"):
        return False  # URLs and absolute paths: not relative links
    resolved = (base / target).resolve()
    return resolved != REPO and REPO not in resolved.parents


def test_no_reference_outside_the_repository(text_files):
    problems = []
    for rel, text in text_files.items():
        base = (REPO / rel).parent
        for lineno, line in enumerate(text.splitlines(), 1):
            for pattern, why in FORBIDDEN:
                if pattern.search(line):
                    problems.append(f"{rel}:{lineno}: {why}: {line.strip()}")
            if rel.endswith(".md"):
                for target in MD_LINK.findall(line):
                    if _outside(base, target):
                        problems.append(f"{rel}:{lineno}: link {target!r} leaves the repository")
    assert not problems, "the repository must stand alone:\n" + "\n".join(problems)


def _model_doc_sections() -> list[int]:
    assert MODEL_DOC.is_file(), "docs/model.md is missing"
    return [int(n) for n in HEADING.findall(MODEL_DOC.read_text(encoding="utf-8"))]


def test_model_doc_sections_are_numbered_in_order():
    sections = _model_doc_sections()
    assert sections == list(range(1, len(sections) + 1)), f"docs/model.md '## N ' headings: {sections}"


def test_cited_model_doc_sections_exist(text_files):
    sections = set(_model_doc_sections())
    cited = 0
    problems = []
    for rel, text in text_files.items():
        for lineno, line in enumerate(text.splitlines(), 1):
            for first, last in CITATION.findall(line):
                numbers = range(int(first), int(last or first) + 1)
                cited += 1
                for n in numbers:
                    if n not in sections:
                        problems.append(f"{rel}:{lineno}: cites docs/model.md section {n}, which has no "
                                        f"'## {n} ' heading: {line.strip()}")
    assert cited, "no docs/model.md section citations found: is the pattern still right?"
    assert not problems, "\n".join(problems)
