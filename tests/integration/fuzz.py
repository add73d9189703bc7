"""Clients that send random strings of RESP pieces, commands and random bytes to a proxy
(sometimes reading, closing at random points), for the fixed-seed fuzz tests: what
fuzzing the demos found (session 24) each showed as a traceback in the proxy's log."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Sequence

# pieces of RESP and commands a fuzzing client strings together (no command that acts on
# other clients or the server: CLIENT, CONFIG, FLUSHALL ... would make a bystander fail
# for reasons of its own)
FUZZ_PIECES = [b"*", b"$", b"+", b"-", b":", b"\r\n", b"-1", b"0", b"1", b"2", b"3", b"99999999999", b"x", b"\x00",
               b"\xff", b"%", b"~", b">", b"_", b",", b"#", b"=", b"inline ping\r\n", b"*-1\r\n", b"*0\r\n",
               b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"*1\r\n$4\r\nPING\r\n", b"*3\r\n$3\r\nSET\r\n",
               b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n", b"*2\r\n$10\r\nPSUBSCRIBE\r\n$1\r\n*\r\n",
               b"*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n", b"*1\r\n$5\r\nMULTI\r\n",
               b"*1\r\n$4\r\nEXEC\r\n", b"*2\r\n$6\r\nSELECT\r\n$2\r\n99\r\n", b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
               b"*4\r\n$5\r\nBLPOP\r\n$1\r\na\r\n$1\r\nb\r\n$3\r\n0.1\r\n", b"*2\r\n$5\r\nWATCH\r\n$1\r\nk\r\n",
               b"*1\r\n$5\r\nRESET\r\n", b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n",
               b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n"]

# what cluster mode adds: fan-outs over the shards, cross-slot commands, shard channels
CLUSTER_PIECES = [b"*2\r\n$4\r\nSCAN\r\n$1\r\n0\r\n", b"*1\r\n$6\r\nDBSIZE\r\n",
                  b"*2\r\n$10\r\nSSUBSCRIBE\r\n$1\r\nq\r\n", b"*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nz\r\n",
                  b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nz\r\n$1\r\n2\r\n",
                  b"*3\r\n$6\r\nEXISTS\r\n$1\r\na\r\n$1\r\nz\r\n", b"*1\r\n$9\r\nRANDOMKEY\r\n",
                  b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n", b"*1\r\n$8\r\nREADONLY\r\n"]


def fuzz_clients(port: int, seconds: float, bystander: Callable[[int], None], *, clients: int = 4,
                 pieces: Sequence[bytes] = FUZZ_PIECES) -> int:
    """`clients` fuzzing threads (seeds 0..clients-1) against `port` for `seconds` while
    `bystander(i)` runs in a loop here (it asserts what a good client gets); the number
    of fuzzing connections made."""
    stop_at = time.monotonic() + seconds
    connections = [0]

    def fuzz(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    for _ in range(rng.randint(1, 20)):
                        if rng.random() < 0.2:
                            s.sendall(rng.randbytes(rng.randint(1, 100)))
                        else:
                            s.sendall(b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 10))))
                        if rng.random() < 0.3:
                            s.settimeout(0.02)
                            try:
                                s.recv(65536)
                            except OSError:
                                pass
                connections[0] += 1
            except OSError:
                pass    # closed by the proxy mid-send: what a protocol error does

    threads = [threading.Thread(target=fuzz, args=(seed,), daemon=True) for seed in range(clients)]
    for t in threads:
        t.start()
    i = 0
    try:
        while time.monotonic() < stop_at:
            i += 1
            bystander(i)
    finally:
        for t in threads:
            t.join(10)
    return connections[0]


def log_problems(log: str) -> list[str]:
    """The lines of a proxy's log that show a bug: tracebacks, the loop's fatal errors."""
    return [line[:300] for line in log.splitlines() if "Traceback" in line or "Fatal error" in line
            or "Exception in callback" in line or "Task was destroyed" in line or "never retrieved" in line]
