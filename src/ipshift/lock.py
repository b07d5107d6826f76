"""One daemon per gateway: an exclusive lock on a file in ``state_dir``.

Theory of operation: ``ipshift run`` takes ``flock(LOCK_EX | LOCK_NB)`` on
``state_dir/ipshift.lock`` before it touches the kernel, and writes its pid
into the file. A second daemon on the same ``state_dir`` -- whatever its
control socket -- fails to take the lock and stops with one line naming the
running one. The kernel drops the lock when the process ends, however it
ends (a SIGKILL too), so a stale file never blocks a restart.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "ipshift.lock"


class AlreadyRunning(Exception):
    """Another ipshift holds the lock of this state directory."""


class StateLock:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning` (one line, naming the holder's pid)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(f"ipshift: another ipshift (pid {holder}) already runs on state_dir "
                                     f"{self.path.parent} (lock {self.path})") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
