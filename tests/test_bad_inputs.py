"""Every bag/media subcommand over a corpus of bad inputs: one clear line, non-zero exit, no
traceback, no partial output."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from media import write_test_video

ROMA = str(Path(sys.prefix) / "bin" / "roma")
SAMPLE_BAG = Path(__file__).resolve().parent.parent / "roma_ros" / "data" / "sample" / "bag"
SAMPLE_ANN = SAMPLE_BAG.parent / "annotations.yaml"


def _bag_copy(root: Path, name: str) -> Path:
    bag = root / name
    shutil.copytree(SAMPLE_BAG, bag)
    return bag


def _corrupt_bags(root: Path) -> dict[str, Path]:
    bags = {"missing": root / "missing", "empty_dir": root / "empty_dir"}
    bags["empty_dir"].mkdir()
    f = root / "random.db3"
    f.write_bytes(bytes(range(256)) * 40)
    bags["random_file"] = f
    b = bags["garbage_metadata"] = _bag_copy(root, "garbage_metadata")
    (b / "metadata.yaml").write_text("{{{{ not yaml ::")
    b = bags["unknown_storage"] = _bag_copy(root, "unknown_storage")
    meta = b / "metadata.yaml"
    meta.write_text(meta.read_text().replace("storage_identifier: sqlite3", "storage_identifier: bagz"))
    for frac in (0.0, 0.1, 0.5):
        b = bags[f"truncated_{frac}"] = _bag_copy(root, f"truncated_{frac}")
        db = next(b.glob("*.db3"))
        data = db.read_bytes()
        db.write_bytes(data[: int(len(data) * frac)])
    return bags


@pytest.fixture(scope="module")
def bad_bags(tmp_path_factory):
    return _corrupt_bags(tmp_path_factory.mktemp("bad_bags"))


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_media")
    good = write_test_video(root / "good.mp4", seconds=2.0)
    data = good.read_bytes()
    media = {"missing": root / "missing.mp4", "empty": root / "empty.mp4", "random": root / "random.mp4",
             "a_directory": root}
    media["empty"].write_bytes(b"")
    media["random"].write_bytes(bytes((i * 7919) % 256 for i in range(20000)))
    for keep in (16, 100, 1000):  # cut inside the header (moov at the end: nothing decodable)
        p = root / f"cut_{keep}.mp4"
        p.write_bytes(data[:keep])
        media[p.stem] = p
    return media


def check(result: subprocess.CompletedProcess, command: str, path: Path) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"roma {command}:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert str(path) in lines[0] or path.name in lines[0], lines[0]


@pytest.mark.parametrize("name", ["missing", "empty_dir", "random_file", "garbage_metadata", "unknown_storage",
                                  "truncated_0.0", "truncated_0.1", "truncated_0.5"])
def test_play_and_eval_reject_bad_bags_cleanly(bad_bags, tmp_path, name):
    bag = bad_bags[name]
    play = subprocess.run([ROMA, "play", str(bag), "--rate", "50", "--no-wait"], capture_output=True, text=True, timeout=120)
    if name == "truncated_0.5" and play.returncode == 0:  # sqlite may serve the pages it has
        assert "Traceback" not in play.stderr
    else:
        check(play, "play", bag)
    out = tmp_path / "out"
    ev = subprocess.run([ROMA, "eval", str(bag), "-o", str(out)], capture_output=True, text=True, timeout=300)
    check(ev, "eval", bag)
    assert not out.exists()  # no partial results


@pytest.mark.parametrize("name", ["missing", "empty", "random", "a_directory", "cut_16", "cut_100", "cut_1000"])
@pytest.mark.parametrize("command", ["record", "convert"])
def test_record_rejects_bad_media_cleanly(bad_media, tmp_path, name, command):
    media = bad_media[name]
    out = tmp_path / "bag"
    result = subprocess.run([ROMA, command, str(media), "-o", str(out)], capture_output=True, text=True, timeout=120)
    check(result, "record", media)
    assert not out.exists()


@pytest.mark.parametrize("argv,path", [
    (["export", "{missing}", "-o", "{out}"], "{missing}"),
    (["profile", "import", "{missing}", "-o", "{out}/p.json"], "{missing}"),
    (["demo", "--bag", "{missing}", "-o", "{out}"], "{missing}"),
    (["demo", "--bag", str(SAMPLE_BAG), "--annotations", "{garbage}", "-o", "{out}"], "{garbage}"),
    (["eval", str(SAMPLE_BAG), "--annotations", "{missing}", "-o", "{out}"], "{missing}"),
    (["eval", str(SAMPLE_BAG), "--annotations", "{garbage}", "-o", "{out}"], "{garbage}"),
    (["export", "{noconf}", "-o", "{out}"], "{noconf}"),
    (["export", "{badconf}", "-o", "{out}"], "{badconf}/config.json"),
    (["record", "{clip}", "-o", "{afile}/bag"], "{afile}/bag"),
    (["tune", str(SAMPLE_BAG), "--annotations", str(SAMPLE_ANN), "--val", "{missing}", "-o", "{out}"], "{missing}"),
    (["tune", str(SAMPLE_BAG), "--annotations", "{garbage}", "--val", str(SAMPLE_BAG), "-o", "{out}"], "{garbage}"),
] + [([command, *extra, "--params", "{%s}" % params, *out], "{%s}" % params)
     for command, extra, out in (("eval", [str(SAMPLE_BAG)], ["-o", "{out}"]), ("doctor", ["--no-model"], []),
                                 ("run", [], []), ("demo", [], ["-o", "{out}"]),
                                 ("tune", [str(SAMPLE_BAG), "--annotations", str(SAMPLE_ANN), "--val", str(SAMPLE_BAG)],
                                  ["-o", "{out}"]))
     for params in ("garbage", "missing", "notparams")])
def test_other_subcommands_reject_bad_paths_cleanly(tmp_path, argv, path):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("just a string")
    notparams = tmp_path / "notparams.yaml"
    notparams.write_text("{{{ [not: yaml")
    (tmp_path / "noconf").mkdir()
    (tmp_path / "badconf").mkdir()
    (tmp_path / "badconf" / "config.json").write_text("{not json")
    (tmp_path / "afile").write_text("a file, not a folder")
    names = {"missing": tmp_path / "missing", "out": tmp_path / "out", "garbage": garbage, "notparams": notparams,
             "noconf": tmp_path / "noconf", "badconf": tmp_path / "badconf", "afile": tmp_path / "afile",
             "clip": "{clip}"}
    if "{clip}" in argv:
        names["clip"] = write_test_video(tmp_path / "clip.mp4", seconds=1.0)
    argv = [a.format(**names) for a in argv]
    result = subprocess.run([ROMA, *argv], capture_output=True, text=True, timeout=120)
    command = " ".join(argv[:2]) if argv[0] == "profile" else argv[0]
    check(result, command, Path(path.format(**names)))
    assert not (tmp_path / "out").exists()
