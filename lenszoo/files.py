"""Writing files so that nothing is lost, and hashing them.

Every file lenszoo writes goes to a hidden temporary sibling named after the
process that writes it (``.NAME.<pid>-<random>.tmp``), is flushed to disk and
then renamed over its real name, so a reader only ever sees a whole file. A
kill leaves at most such a temporary; the next write of the same path removes
those whose process is gone (never a live process's, so two jobs sharing a
directory do not delete each other's work). Temporaries are created with
``open``/``mkdir``, which honour the umask: teammates on a shared filesystem
can read what lenszoo wrote, as with any other file they make.

Output paths a user names are guarded by :func:`claim_output`: lenszoo writes
into a path that is new, empty, or provably its own earlier output (a marker
file it wrote), and refuses anything else, so it never deletes or replaces a
user's files.

Commands that write also hold an advisory lock (``lenszoo.locks.hold_lock``) on what they write
into, so two commands never write one output at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import LenszooError
from .locks import FOLDER_LOCK

TEMPORARY_SUFFIX = ".tmp"


# -- hashing -------------------------------------------------------------------------------------
def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_says(path, key: str, value) -> bool:
    """True if ``path`` is a JSON object whose ``key`` is ``value``: how lenszoo recognises the
    marker files of its own outputs (a checkpoint's config.json, an evaluation's results.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get(key) == value


# -- temporaries -----------------------------------------------------------------------------------
def temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path`` that names this process."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}"


def _writer_pid(temporary: Path, name: str) -> int | None:
    middle = temporary.name[len(name) + 2: -len(TEMPORARY_SUFFIX)]  # ".NAME." ... ".tmp"
    pid = middle.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: Path):
    """Remove what killed writers of ``path`` left behind (temporaries of processes that are gone)."""
    path = Path(path)
    try:
        candidates = list(path.parent.glob(f".{path.name}.*{TEMPORARY_SUFFIX}"))
    except OSError:
        return
    for stale in candidates:
        pid = _writer_pid(stale, path.name)
        if pid is not None and _process_alive(pid):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path) -> Path:
    """Give a file written by a library that creates it 0600 (safetensors) the usual permissions."""
    os.chmod(path, 0o666 & ~current_umask())
    return Path(path)


# -- atomic files ------------------------------------------------------------------------------------
def _written_temporary(path: Path, write: Callable, *, sync: bool) -> Path:
    """A new temporary sibling of ``path`` written through ``write(binary_file)`` (and fsynced with
    ``sync``), after the stale ones of dead writers are removed; removed again if writing fails."""
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path, write: Callable) -> Path:
    """Write ``path`` through ``write(binary_file)``: a temporary sibling, fsync, then rename."""
    path = Path(path)
    tmp = _written_temporary(path, write, sync=True)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def publish_new(tmp, path) -> Path:
    """Give the finished temporary ``tmp`` the name ``path``, which must be new: a hard link, which
    fails (``FileExistsError``) rather than replaces a file that appeared meanwhile; then ``tmp``
    goes. On a filesystem without hard links the check and the rename are separate steps; callers
    hold the output's lock (``lenszoo.locks.hold_lock``), so only another program could slip in between."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK):
            raise
        if path.exists() or path.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(tmp, path)
    tmp.unlink(missing_ok=True)
    return path


def atomic_create(path, write: Callable) -> Path:
    """Like :func:`atomic_write`, but ``path`` must be new (:func:`publish_new`)."""
    path = Path(path)
    tmp = _written_temporary(path, write, sync=False)  # publish_new syncs it
    try:
        return publish_new(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj, *, sort_keys: bool = True) -> str:
    return json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n"


def atomic_write_json(path, obj, *, sort_keys: bool = True) -> Path:
    return atomic_write_text(path, json_text(obj, sort_keys=sort_keys))


def _make_temporary_folder(target: Path) -> Path:
    remove_stale_temporaries(target)
    tmp = temporary_path(target)
    tmp.mkdir()
    return tmp


@contextmanager
def atomic_folder(target):
    """Yield a temporary folder that then replaces ``target`` whole.

    Only for folders lenszoo owns (a run's ``best/``, a state folder, a checkpoint folder it
    checked with :func:`claim_output`): the previous content of ``target`` is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temporary_folder(target)
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- output paths a user names ---------------------------------------------------------------------
def _visible_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != FOLDER_LOCK)


def claim_output(path, *, what: str, is_ours: Callable[[Path], bool], option: str = "--out",
                 kind: str = "folder") -> Path:
    """Check that ``path`` may be written: new, an empty folder, or ``is_ours(path)``.

    Runs before any work, so a refused path costs nothing; :func:`output_folder`
    and :func:`output_file` check again when they write.
    """
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            if parent != path and not parent.is_dir():
                raise LenszooError(f"{option} {path} is inside {parent}, which is a file; choose a path in a folder")
            break
    if kind == "folder":
        if path.exists() and not path.is_dir():
            raise LenszooError(f"{option} {path} is a file; give a folder for the {what}")
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise LenszooError(f"{option} {path} is not writable; choose another {option} or fix its permissions")
            entries = _visible_entries(path)
            if entries and not is_ours(path):
                shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                raise LenszooError(f"{option} {path} already holds files that are not a {what} (found {shown}); "
                                   f"lenszoo never replaces them: choose a new or empty {option}")
    else:
        if path.is_dir():
            raise LenszooError(f"{option} {path} is a folder; give a file path for the {what}")
        if path.exists() and not is_ours(path):
            raise LenszooError(f"{option} {path} exists and was not written by lenszoo as a {what}; "
                               f"lenszoo never replaces it: choose another {option} or remove it yourself")
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is not None and existing != path and not os.access(existing, os.W_OK | os.X_OK):
        raise LenszooError(f"cannot create {option} {path}: {existing} is not writable; "
                           f"choose another {option} or fix its permissions")
    return path


@contextmanager
def output_folder(path, *, what: str, is_ours: Callable[[Path], bool], previous_files: Callable[[Path], list] = None,
                  option: str = "--out"):
    """Yield a temporary folder; its files then land in ``path`` (checked by :func:`claim_output`).

    A new ``path`` is created by renaming the finished folder (whole or not at all). An empty
    folder, or this command's own earlier output, gets each file replaced atomically; files the
    earlier output listed (``previous_files``) that this run did not write are removed, and
    nothing else in the folder is touched.
    """
    path = claim_output(path, what=what, is_ours=is_ours, option=option)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _make_temporary_folder(path)
        try:
            yield tmp
            os.rename(tmp, path)  # fails, rather than replaces, if someone made `path` meanwhile
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    old = list(previous_files(path)) if previous_files and is_ours(path) else []
    tmp = _make_temporary_folder(path / "output")
    try:
        yield tmp
        written = sorted(p.name for p in tmp.iterdir())
        for name in written:
            os.replace(tmp / name, path / name)
        for name in old:
            if name not in written and "/" not in name and (path / name).is_file():
                (path / name).unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def output_file(path, text: str, *, what: str, is_ours: Callable[[Path], bool], option: str = "--out") -> Path:
    """Write ``text`` to ``path`` atomically if it is new or lenszoo's own earlier output."""
    path = claim_output(path, what=what, is_ours=is_ours, option=option, kind="file")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# -- input files a user names ----------------------------------------------------------------------
MAX_TEXT_BYTES = 64 * 1024 * 1024  # a notes or paper file far larger than this is not one


def path_within(path, base) -> str:
    """``path`` relative to the folder ``base`` (POSIX separators) when it lies inside it, else as
    given: how a record names a file so that it means the same on another machine or clone."""
    text = str(path)
    if not os.path.isabs(text):
        return text
    try:
        inside = Path(text).relative_to(Path(base).resolve())
    except ValueError:
        return text
    return inside.as_posix() or "."


def repository_of(path) -> Path | None:
    """The top of the git work tree holding ``path`` (the nearest folder with a ``.git``), if any."""
    here = Path(path)
    for folder in (here, *here.parents):
        try:
            if (folder / ".git").exists():
                return folder
        except OSError:
            return None
    return None


def path_kind(path) -> str:
    """What ``path`` is, in words: ``"a regular file"``, ``"a folder"``, ``"a FIFO (named pipe)"``, ``"a
    character device"``, ... or ``"missing"``; a link is followed, and named with its target."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"a broken link (to {os.readlink(path)})" if path.is_symlink() else "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    if path.is_symlink():
        kind += f" (a link to {os.path.realpath(path)})"
    return kind


def is_regular_file(path) -> bool:
    return path_kind(path).startswith("a regular file")


def require_regular_file(path, what: str) -> Path:
    """``path`` if it is a regular file (links followed); else a one-line error that says what it is,
    so a FIFO or a link to /dev/zero is never read (forever) nor called missing."""
    path = Path(path)
    kind = path_kind(path)
    if kind.startswith("a regular file"):
        return path
    if kind == "missing":
        raise LenszooError(f"{what} {path} does not exist")
    raise LenszooError(f"{what} {path} is {kind}, not a regular file; pass a regular file")


def read_user_text(path, what: str) -> str:
    """The UTF-8 text of a file a user names (``--notes``, ``--paper``, ``--readme``), or a one-line
    error: missing, not a regular file, too large, or not UTF-8 text (a binary file)."""
    path = require_regular_file(path, what)
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise LenszooError(f"{what} {path} holds {size:,} bytes, more than a text file of this kind "
                           f"({MAX_TEXT_BYTES // 2**20} MiB at most); check the path")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LenszooError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           "pass a text file") from None
