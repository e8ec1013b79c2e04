"""Writing into an output directory: whole files or none, and one writer at a time.

``atomic_write_text`` writes a temporary file beside the target and renames
it over the target, so a reader sees the old or the new content, never half;
a write that fails (a full disk, a value that cannot be written) removes its
temporary file. ``OutputLock`` is an advisory ``flock`` on a lock file in the
directory: a second process is refused with the holder's pid, and the kernel
drops the lock when its holder dies, so a crashed run never blocks its resume.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one rename; on failure nothing is left but the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: shards may write the same file
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class DirectoryInUseError(OSError):
    """Another process writes into the output directory."""


class OutputLock:
    """``with OutputLock(directory, "eval run"):`` holds ``directory/.videopanda.lock`` (``name`` tells several
    writers that may share a directory apart, e.g. the shards of one benchmark run) or raises
    ``DirectoryInUseError`` naming the process that holds it."""

    def __init__(self, directory: str | Path, command: str, name: str = "videopanda") -> None:
        self.path = Path(directory) / f".{name}.lock"
        self.command = command
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process that has not said its pid"
            os.close(fd)
            raise DirectoryInUseError(
                f"{self.path.parent} is in use by another process ({holder}); wait for it to finish, or give "
                "another output directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {self.command}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock; the file stays for the next run
            self._fd = None
