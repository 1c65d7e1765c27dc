"""Atomic file replacement: the one place that writes files the library must never leave half
written (indexes, caches, converted models, sidecars, reports).

A write goes to a temporary file ``.<name>.<8 random characters>.tmp`` beside the target,
which is renamed onto the target when the write succeeds (:func:`os.replace`: readers see
the old file or the new one, never a mix) and removed when it fails.

Permissions: the new file gets the mode of the file it replaces, or, for a new file, the
mode an ordinary ``open(path, "w")`` would give it (``0o666`` less the umask). (The
temporary file is private, ``0o600``, while it is written over an existing file.)

Stale temporaries: a writer that is killed (``SIGKILL``, power loss) cannot remove its
temporary file. Each writer holds an advisory lock (``flock``) on its temporary file while
it writes, so the next save of the same target, and the next index load from it
(:func:`remove_stale_temporaries`), delete the temporaries of that target that no live
writer holds and that are older than :data:`STALE_GRACE_S` seconds. Where locks are not
available (Windows, some network file systems) only temporaries older than
:data:`STALE_AGE_S` (one hour) are deleted. Only regular files owned by the current user
whose names match the target's exact pattern are ever touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["STALE_AGE_S", "STALE_GRACE_S", "atomic_path", "remove_stale_temporaries"]

#: A temporary file no writer holds is removed once it is this old (seconds).
STALE_GRACE_S = 5.0
#: Without file locks, a temporary file is taken for abandoned only when this old (seconds).
STALE_AGE_S = 3600.0
_SUFFIX = ".tmp"
_RANDOM = 8  # characters; tempfile.mkstemp's names (earlier versions) have as many
_PRIVATE = 0o600
_DEFAULT = 0o666  # the umask applies


def _temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{{_RANDOM}}}{re.escape(_SUFFIX)}")


def _lock(fd: int) -> bool:
    """Take the writer's lock on ``fd`` (False where locks are unavailable)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _abandoned(path: Path, st: os.stat_result, now: float) -> bool:
    """Whether the temporary file ``path`` belongs to no live writer (checked by taking its
    lock; without locks: by age)."""
    age = now - st.st_mtime
    if age < STALE_GRACE_S:
        return False
    if fcntl is None:
        return age >= STALE_AGE_S
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        here = os.fstat(fd)
        if (here.st_dev, here.st_ino) != (st.st_dev, st.st_ino):
            return False  # replaced since it was listed
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        except OSError:  # locks unsupported here: fall back to the age bound
            return age >= STALE_AGE_S
        return True
    finally:
        os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the abandoned temporary files of earlier writes of ``path`` (see the module
    docstring for which ones); returns those deleted. Never raises for an unreadable or
    read-only folder."""
    path = Path(path)
    pattern = _temp_pattern(path.name)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue
        tmp = Path(entry.path)
        if _abandoned(tmp, st, now):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
                removed.append(tmp)
    return removed


def _create_temp(path: Path, mode: int) -> tuple[int, Path]:
    """Create ``.<name>.<random>.tmp`` beside ``path`` exclusively, with ``mode`` (less the
    umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        token = secrets.token_hex(_RANDOM // 2)
        tmp = path.with_name(f".{path.name}.{token}{_SUFFIX}")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")  # pragma: no cover


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed onto
    ``path`` (:func:`os.replace`), when it raises it is removed and ``path`` is untouched.

    The new file keeps the permissions of the file it replaces (a new file: ``0o666`` less
    the umask). Abandoned temporaries of earlier, killed writes of ``path`` are removed
    first (:func:`remove_stale_temporaries`). ``durable=True`` also fsyncs the folder so
    that the rename survives a power loss (POSIX; best effort elsewhere). Callers fsync the
    file itself if they need that.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    try:
        keep_mode: int | None = stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except OSError:
        keep_mode = None
    fd, tmp = _create_temp(path, _DEFAULT if keep_mode is None else _PRIVATE)
    try:
        _lock(fd)  # held until the rename: tells others this temporary file is alive
        yield tmp
        if keep_mode is not None:
            os.chmod(tmp, keep_mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    if durable:
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
