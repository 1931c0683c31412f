"""Advisory locks on what a command writes: held for the command's whole life, so two commands never
write one output at once (the second is refused in one line, at once, no waiting). A file output's
lock is a hidden sibling, a folder output's (a run directory) a file inside it."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import LenszooError

# A lock file holds this line when lenszoo created it; only such a file is ever removed again.
LOCK_SIGNATURE = b"lenszoo lock: held by the command writing beside it\n"
FOLDER_LOCK = ".lenszoo.lock"


def lock_beside(path) -> Path:
    """The lock file of a file output: a hidden sibling ``.NAME.lock``."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def lock_inside(folder) -> Path:
    """The lock file of a folder output (a run directory): ``FOLDER/.lenszoo.lock``."""
    return Path(folder) / FOLDER_LOCK


def _open_lock_file(lock: Path) -> tuple[int, bool]:
    """A descriptor of ``lock`` (created, and signed, if missing) and whether this call created it."""
    flags = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, 0o666)
    except FileExistsError:
        return os.open(lock, os.O_RDONLY | flags), False
    try:
        os.write(fd, LOCK_SIGNATURE)
    except OSError:
        os.close(fd)
        lock.unlink(missing_ok=True)
        raise
    return fd, True


def _same_file(fd: int, lock: Path) -> bool:
    try:
        now = os.stat(lock, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


@contextmanager
def hold_lock(lock, *, target, option: str = "--out", what: str = "another lenszoo command"):
    """Hold an exclusive advisory lock (``flock``) on the file ``lock`` for the with-block.

    Another process holding it means another command is writing ``target``: refused in one line,
    at once (no waiting). The lock file is created if missing and removed on release when it
    carries lenszoo's signature (a user's file of that name is locked, never changed). Where the
    filesystem offers no locks, the block runs unlocked: exclusive renames still guard the result.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        yield None
        return
    lock = Path(lock)
    fd = None
    for _ in range(20):  # a holder removing the file between our open and our lock: take the new one
        fd, created = _open_lock_file(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            fd = None
            if isinstance(exc, BlockingIOError):
                raise LenszooError(f"{target} is being written by {what} (it holds the lock {lock}); wait for "
                                   f"it to finish, or choose another {option}") from None
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL):
                raise
            if created:
                lock.unlink(missing_ok=True)
            break  # no locks on this filesystem
        if _same_file(fd, lock):
            break
        os.close(fd)
        fd = None
    else:
        raise LenszooError(f"cannot lock {lock}: it keeps being replaced; check what else writes {target}")
    try:
        yield lock if fd is not None else None
    finally:
        if fd is not None:
            try:
                if os.pread(fd, len(LOCK_SIGNATURE) + 1, 0) == LOCK_SIGNATURE and _same_file(fd, lock):
                    lock.unlink(missing_ok=True)  # still locked: nobody else holds this file
            except OSError:
                pass
            os.close(fd)
