"""Process plumbing: free ports, child process groups, bounded readiness polls.

Every child is started in its own session (so its own process group): a
Ctrl-C in the terminal reaches only the benchmark script, which then kills
each group itself, children of children included.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.05


class StartError(RuntimeError):
    """A server did not start, or did not answer, within its time limit."""


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free TCP ports on 127.0.0.1.

    All sockets stay bound until every port is picked, so the ports differ.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Managed:
    """One child process (leader of its own process group) and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        """True while the group leader has not exited."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last `lines` lines of the process's combined stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: int) -> None:
    """Send `sig` to process group `pid`, ignoring a group that is already gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_groups(procs: Sequence[Managed], grace_s: float = 3.0) -> None:
    """SIGTERM every group, wait up to `grace_s` in all, then SIGKILL what is left."""
    for managed in procs:
        _signal_group(managed.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for managed in procs:
        try:
            managed.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        # Mop up the leader if it ignored SIGTERM, and any straggling children.
        _signal_group(managed.proc.pid, signal.SIGKILL)
        managed.proc.wait()


class ProcessRegistry:
    """Owns every long-running child of the benchmark; close() kills them all."""

    def __init__(self) -> None:
        self._procs: list[Managed] = []

    def start(self, name: str, argv: Sequence[str], log_path: Path,
              env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Managed:
        """Start `argv` in a new session with stdout+stderr going to `log_path`."""
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=dict(env) if env else None,
                                    cwd=cwd, start_new_session=True)
        managed = Managed(name, proc, log_path)
        self._procs.append(managed)
        return managed

    def pids(self) -> list[int]:
        """The process ids of the children still running."""
        return [m.proc.pid for m in self._procs if m.alive()]

    def alive(self, name: str) -> bool:
        """True while the child started under `name` is running."""
        return any(m.alive() for m in self._procs if m.name == name)

    def stop(self, managed: Managed) -> None:
        """Kill one child's process group now."""
        kill_groups([managed])
        self._procs.remove(managed)

    def close(self) -> None:
        """Kill every child's process group (idempotent)."""
        procs, self._procs = self._procs, []
        kill_groups(procs)


def resp_encode(*args: str) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_line(sock: socket.socket) -> bytes:
    """Read one CRLF-terminated reply line (a simple reply: +OK, +PONG, -ERR ...)."""
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def answers(port: int, timeout_s: float = 1.0, tls: ssl.SSLContext | None = None) -> bool:
    """True when the server on `port` answers PING with +PONG and a SET with +OK
    (over TLS with the client context `tls`).

    The SET matters for proxies: they may answer PING before they know
    where to send writes.
    """
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as raw, \
                (tls.wrap_socket(raw, server_hostname=HOST) if tls else raw) as sock:
            sock.sendall(resp_encode("PING"))
            if not _read_line(sock).startswith(b"+PONG"):
                return False
            sock.sendall(resp_encode("SET", "bench:ready", "1"))
            return _read_line(sock).startswith(b"+OK")
    except OSError:
        return False


def wait_ready(managed: Managed, port: int, timeout_s: float, tls: ssl.SSLContext | None = None,
               poll_s: float = POLL_INTERVAL_S) -> float:
    """Poll `port` every `poll_s` until it answers (see answers()); return the seconds it took.

    Raises StartError, with the tail of the process's log, when the process
    exits first or the time limit passes.
    """
    start = time.monotonic()
    while True:
        if not managed.alive():
            raise StartError(f"{managed.name} exited with status {managed.proc.returncode}"
                             f"\n{managed.log_tail()}")
        if answers(port, tls=tls):
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise StartError(f"{managed.name} did not answer PING/SET on port {port} within "
                             f"{timeout_s:.0f}s\n{managed.log_tail()}")
        time.sleep(poll_s)
