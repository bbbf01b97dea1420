"""Single-writer directories: a lock file that names its holder (host, pid, command) and dies with it.

`with dir_lock(path, what="collect shard 0", hint="...") as lock:` holds an exclusive `flock` on `path`
(e.g. `<dataset>/.shard-00000.lock`, `<job dir>/.metamanip.lock`) for the block. A second writer is refused
at once with `DirectoryLockedError`, naming the holder from the file's contents and the hint (how to write in
parallel instead). The kernel drops the lock when its process dies, whatever the death (kill -9, OOM, a
node reboot with NFS lock recovery), so a lock left by a crashed process is stale by construction: the next
writer takes it over (and logs whose it was). The file itself is kept (deleting it would let two writers
lock two different inodes); when released it says `released`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from metamanip.errors import DirectoryLockedError

log = logging.getLogger(__name__)


@dataclass
class Lock:
    """A held lock: its file and what the previous holder's record said (None when there was none)."""

    path: Path
    previous: dict[str, Any] | None

    @property
    def took_over(self) -> bool:
        """True when a crashed holder had left its record (a stale lock was taken over)."""
        return bool(self.previous) and self.previous.get("state") == "held"


def holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """What the lock file says about its (last) holder, or None when it is absent or unreadable."""
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


def _describe(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "another process (it has not written its name yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.get("since", 0)))
    return f"pid {rec.get('pid')} on host {rec.get('host')} (since {since}: {rec.get('command', '?')})"


@contextmanager
def dir_lock(path: str | os.PathLike, what: str, hint: str = "") -> Iterator[Lock]:
    """Hold the exclusive lock file `path` for the block, or raise `DirectoryLockedError` at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise DirectoryLockedError(
                f"{what}: {path.parent} is being written by {_describe(holder(path))}, and a directory has one "
                f"writer at a time", fix=hint or "wait for that process to finish, or write somewhere else") from None
        previous = holder(path)
        lock = Lock(path, previous)
        if lock.took_over:
            log.warning("%s: took over the lock of %s, which is no longer running (a crash or a kill)", what,
                        _describe(previous))
        record = {"state": "held", "host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                  "what": what, "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        try:
            yield lock
        finally:
            released = {**record, "state": "released", "ended": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(released) + "\n").encode(), 0)
    finally:
        os.close(fd)  # drops the flock
