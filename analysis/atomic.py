"""Atomic file output: write to a temporary file beside the target, then rename over it.

A reader (or an interrupted run) therefore sees either the old file or the complete new
one, never a half-written file.

Leftovers of killed processes. An exception (including Ctrl-C, i.e. ``KeyboardInterrupt``)
removes the temporary file or staging folder on the way out. A process killed outright
(SIGKILL, or SIGTERM with Python's default handler, which runs no cleanup) cannot do that, so
every temporary name carries the id of the process that made it
(``.NAME.<pid>-XXXX.tmp`` for files, ``.NAME.tmp-<pid>-XXXX`` and ``.NAME.old-<pid>-XXXX`` for
folders). The next write to the same target removes the leftovers whose process is no longer
running; a moved-aside previous folder (``.old-``) whose replacement never arrived is moved
back into place, so the target is again the previous complete folder. Temporaries of running
processes (e.g. a concurrent run writing the same target) are never touched. The library
installs no signal handlers.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Time this module was imported: folders of the legacy naming (no pid) older than this are stale.
_STARTED = time.time()


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of new files: what ``open()`` would give (0o666 minus the umask), not mkstemp's 0o600.
_FILE_MODE = 0o666 & ~_current_umask()


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (of any user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists but belongs to someone else
        return True
    return True


def _stale(path: Path, pid: str | None) -> bool:
    """A leftover of a process that is gone (legacy names without a pid: older than this process)."""
    if pid is None:
        try:
            return path.lstat().st_mtime < _STARTED
        except OSError:
            return False
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


def _remove_stale_temp_files(path: Path) -> None:
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-[A-Za-z0-9_]+\.tmp$")
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.match(candidate.name)
        if match and _stale(candidate, match.group(1)):
            candidate.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders; return ``path``.

    Stale temporary files of this target left by killed processes are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def _sibling(out_dir: Path, kind: str) -> Path:
    return out_dir.with_name(f".{out_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def clean_stale_siblings(out_dir: Path) -> list[Path]:
    """Clear what killed processes left beside ``out_dir``; return the folders handled.

    ``.NAME.tmp-<pid>-*`` staging folders of processes that are gone are removed (they never
    held a complete result). A ``.NAME.old-<pid>-*`` folder is the previous complete ``out_dir``
    moved aside by a swap that was cut short: it is moved back if ``out_dir`` is missing, and
    removed otherwise. Folders of running processes are left alone.
    """
    out_dir = Path(out_dir)
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.(tmp|old)-(?:(\d+)-)?[0-9a-f]+$")
    handled = []
    for sibling in sorted(out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*-*")):
        match = pattern.match(sibling.name)
        if not match or not sibling.is_dir() or sibling.is_symlink() or not _stale(sibling, match.group(2)):
            continue
        try:
            if match.group(1) == "old" and not out_dir.exists():
                os.rename(sibling, out_dir)
            else:
                shutil.rmtree(sibling)
        except OSError:  # e.g. removed meanwhile by another process cleaning up too
            continue
        handled.append(sibling)
    return handled


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished ``staging`` folder to ``out_dir``, replacing an existing one safely."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    backup = _sibling(out_dir, "old")
    os.rename(out_dir, backup)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(backup, out_dir)
        raise
    shutil.rmtree(backup)


@contextmanager
def staged_directory(out_dir: Path) -> Iterator[Path]:
    """Build a folder in a hidden sibling and move it over ``out_dir`` only when complete.

    Yields the staging folder ``.NAME.tmp-<pid>-XXXX``; on normal exit it replaces ``out_dir``
    (the old folder is kept, as ``.NAME.old-<pid>-XXXX``, until the new one is in place), on
    any exception (including Ctrl-C) it is removed, so ``out_dir`` is either the old complete
    folder or the new complete one. Leftovers of killed processes are cleared first
    (:func:`clean_stale_siblings`).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(out_dir)
    staging = _sibling(out_dir, "tmp")
    staging.mkdir()
    try:
        yield staging
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
