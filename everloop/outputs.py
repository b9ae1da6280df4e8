"""The one rule for everything everloop writes, used by every command.

* An output path that exists is replaced only with ``--force``.
* ``--force`` replaces only something everloop made, of the same kind as the new output:
  a video with a video, a frame folder with a frame folder, a sheet image with a sheet
  image, a report folder with a report, a run with a run, a dataset with a dataset, a
  recording with a recording. It never replaces a run folder, a dataset or a folder
  everloop did not make with anything else, and never an input of the same command (nor a
  folder that holds one, nor anything inside one).
* Every writer goes through a temp name beside the target (``.NAME.tmp-PID``) and a rename,
  so a crash leaves either the old output or the new one. A temp left by a process that
  died (SIGKILL, power cut) is removed at the next write into that folder; a ``.NAME.old-PID``
  (an old output moved aside for a swap) is put back if the swap never finished.

``claim`` checks a path before any work is done; ``kind_of`` says what a path holds now.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .errors import EverloopError

# What each kind is called in messages.
KINDS = {
    "video": "a video",
    "frames": "a frame folder",
    "image": "a sheet image",
    "report": "a report folder",
    "run": "a run folder",
    "dataset": "a dataset folder",
    "recording": "a recording",
    "json": "a JSON file",
    "paint-renderer": "a painter renderer folder",
    "paint-agent": "a painter agent folder",
}
# Files a run folder holds (train.py, checkpoint.py, a family's stage files *.safetensors);
# a folder of only these, without config.json yet, is a run killed before its first save.
RUN_ENTRIES = {"config.json", "model.safetensors", "train_state.pt", "log.jsonl", "samples"}
REPORT_SUFFIXES = {".json", ".md", ".png", ".csv", ".txt", ".html"}
TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>\d+)(?:\.[A-Za-z0-9]+)?$")
FRAME = re.compile(r"^frame_\d+\.png$")


def temp_path(target: Path) -> Path:
    """The hidden temp name a writer uses beside ``target``."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def clean_stale(folder: Path) -> None:
    """Remove temps of dead processes in ``folder``; put back an old output whose swap
    was cut short (its target missing), else drop it. Never touches a live process's temp."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for p in entries:
        m = TEMP.match(p.name)
        if not m or _alive(int(m["pid"])):
            continue
        try:
            target = p.with_name(m["name"])
            if m["what"] == "old" and not os.path.lexists(target):
                os.replace(p, target)  # the old output is the only copy left: restore it
            else:
                _remove(p)
        except OSError:
            pass  # best effort: never fail a command over someone's leftovers


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not TEMP.match(p.name)]


def _file_kind(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return "file"
    if head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or head[:4] == b"GIF8":
        return "video"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        idat = head.find(b"IDAT")
        actl = head.find(b"acTL")  # an APNG's animation chunk comes before the first IDAT
        return "video" if actl != -1 and (idat == -1 or actl < idat) else "image"
    if path.suffix.lower() == ".json":
        try:
            json.loads(path.read_text())
            return "json"
        except (OSError, ValueError):
            return "file"
    return "file"


def _folder_kind(path: Path) -> str:
    try:
        entries = _visible(path)
    except OSError:
        return "folder"
    names = {p.name for p in entries}
    if not names:
        return "empty"
    if "config.json" in names:
        try:
            config = json.loads((path / "config.json").read_text())
            family, is_run = config.get("family"), isinstance(config.get("config"), dict)
        except (OSError, ValueError, AttributeError):
            family, is_run = None, False
        if is_run and isinstance(family, str):  # what checkpoint.save_run / painter write
            return family if family in ("paint-renderer", "paint-agent") else "run"
        return "folder"
    started = names & {"model.safetensors", "train_state.pt"} or (
        "log.jsonl" in names and (path / "samples").is_dir())  # what a new run makes first
    if started and all(n in RUN_ENTRIES or n.endswith(".safetensors") for n in names):
        return "run"  # killed before config.json was written: still a run, never anyone's folder
    if "frames.npy" in names and names <= {"frames.npy", "meta.json"}:
        return "dataset"
    if "record.json" in names:
        return "recording"
    if "report.json" in names and all(p.is_file() and p.suffix.lower() in REPORT_SUFFIXES
                                      for p in entries):
        return "report"
    if all(FRAME.match(n) for n in names):
        return "frames"
    return "folder"


def kind_of(path: Path) -> str | None:
    """What ``path`` holds: one of KINDS, 'empty' (folder), 'folder' / 'file' (not made by
    everloop), 'link', or None when nothing is there."""
    path = Path(path)
    if path.is_symlink():
        return "link"
    if not path.exists():
        return None
    return _folder_kind(path) if path.is_dir() else _file_kind(path)


def describe(kind: str | None) -> str:
    return KINDS.get(kind) or {"empty": "an empty folder", "folder": "a folder everloop did not make",
                               "file": "a file everloop did not make", "link": "a symbolic link",
                               None: "nothing"}[kind]


def _inside(a: Path, b: Path) -> bool:
    """Whether a is b or lies inside it."""
    return a == b or b in a.parents


def claim(path, kind: str, *, force: bool, flag: str = "--out", inputs: dict | None = None) -> Path:
    """Check that ``path`` may be written as ``kind``; raise a one-line EverloopError naming
    ``flag`` and the path if not. ``inputs``: {flag: path} of what the command reads.
    Cleans stale temps of dead processes beside the target. Nothing else is touched."""
    path = Path(path)
    where = f"{flag} {path}"
    real = Path(os.path.realpath(path))  # through links: a link to the input is the input
    for in_flag, inp in (inputs or {}).items():
        if inp is None:
            continue
        src = Path(os.path.realpath(inp))
        if (_inside(real, src) and os.path.lexists(path)) or (real != src and _inside(src, real)):
            rel = "is" if real == src else ("lies inside" if _inside(real, src) else "holds")
            raise EverloopError(f"{where} {rel} {in_flag} {inp}, an input of this command; "
                                f"choose another {flag}")
    # The first existing folder on the way up must be a writable folder.
    up = Path(os.path.abspath(path)).parent
    while not os.path.lexists(up) and up != up.parent:
        up = up.parent
    if not up.is_dir():
        raise EverloopError(f"{where}: {up} is a file, not a folder")
    if not os.access(up, os.W_OK | os.X_OK):
        raise EverloopError(f"{where}: cannot write in {up} (permission denied)")
    if up == Path(os.path.abspath(path)).parent:
        clean_stale(up)
    found = kind_of(path)
    if found is None or (found == "empty" and kind not in ("video", "image", "json")):
        return path
    if found != kind and not force:
        raise EverloopError(f"{where} exists; pass --force only to replace {describe(kind)} that everloop made, "
                            f"and this is {describe(found)}: choose another {flag}")
    if found != kind:
        raise EverloopError(f"{where} exists and is not {describe(kind)} but {describe(found)}; choose "
                            f"another {flag} (--force replaces only {describe(kind)} that everloop made)")
    if not force:
        raise EverloopError(f"{where} exists; pass --force to replace it")
    if not os.access(path, os.W_OK) and path.is_dir():
        raise EverloopError(f"{where}: cannot replace it (permission denied)")
    return path


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` (file or folder) to ``out``. An old ``out`` is renamed
    aside first and deleted after, so there is always a complete output at or beside
    ``out``; clean_stale puts the old one back if a kill lands between the two renames."""
    tmp, out = Path(tmp), Path(out)
    if not os.path.lexists(out) or (tmp.is_file() and out.is_file() and not out.is_symlink()):
        os.replace(tmp, out)  # one atomic step
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    _remove(old)
    os.replace(out, old)
    os.replace(tmp, out)
    _remove(old)


def write_file(path: Path, write) -> None:
    """Call write(temp path), then rename it over ``path``; the temp never outlives a failure."""
    path = Path(path)
    clean_stale(path.parent)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
