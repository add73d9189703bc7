"""A small tmpfs mounted for one run under a proxy's data dir, so the disk can be filled up.

The mount point's path carries `rrp_chaos_<pid>`, so `netfaults.sweep_stale()`
unmounts it when a crashed run left it behind; `close()` (atexit, SIGTERM and
the fixture) unmounts it otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

from .netfaults import PREFIX, register_cleanup, unregister_cleanup

FILLER = ".chaos-filler"


class SmallFs:
    """`size_mb` of tmpfs at `<parent>/rrp_chaos_<pid>_<name>`: `fill()` / `unfill()` / `wipe()`."""

    def __init__(self, parent: Path, name: str, size_mb: int = 8) -> None:
        self.pid = os.getpid()
        self.path = Path(parent) / f"{PREFIX}{self.pid}_{name}"
        self.path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", f"{PREFIX}{self.pid}",
                            str(self.path)], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise OSError(f"mount tmpfs on {self.path} failed: {r.stderr.strip()}")
        self.mounted = True
        register_cleanup(self)

    def fill(self) -> int:
        """Write a filler file until the fs is full (ENOSPC); returns the bytes written."""
        written = 0
        chunk = b"\0" * 65536
        with open(self.path / FILLER, "ab", buffering=0) as fh:
            while True:
                try:
                    written += fh.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        # a last byte-sized top-up: a small write must fail too
        with open(self.path / FILLER, "ab", buffering=0) as fh:
            for size in (4096, 512, 1):
                try:
                    while True:
                        written += fh.write(b"\0" * size)
                except OSError:
                    pass
        return written

    def unfill(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def wipe(self) -> None:
        """Remove everything in the data dir (the filler too): the proxy lost its disk."""
        for child in self.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def close(self) -> None:
        if not self.mounted or os.getpid() != self.pid:
            return
        self.mounted = False
        r = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=20)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=20)
        try:
            self.path.rmdir()
        except OSError:
            pass
        unregister_cleanup(self)
