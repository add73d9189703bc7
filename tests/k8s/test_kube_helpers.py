"""tests/k8s/kube.py's own helpers, against real local sockets."""

from __future__ import annotations

import socket
import threading

from .kube import HOST, http_get


def _serve_once(reply: bytes) -> tuple[int, threading.Thread]:
    """A one-shot TCP server that reads the request and answers `reply` (then closes)."""
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(1)

    def run() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(2.0)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(reply)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def test_http_get_answers_no_status_for_a_broken_http_reply():
    """A proxy starting or stopping may answer with a cut or garbled response: http.client
    raises HTTPException (not an OSError) for those; the helper's callers poll, so it must
    report "no answer" (status 0) instead of raising out of the fixture."""
    for reply in (b"garbage that is no status line\r\n\r\n",                 # BadStatusLine
                  b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"):   # IncompleteRead
        port, t = _serve_once(reply)
        status, body = http_get(f"http://{HOST}:{port}/status", timeout=2.0)
        t.join(2.0)
        assert status == 0, (reply, status, body)
        assert body, "the reason is kept for diagnostics"


def test_http_get_connection_refused_is_status_zero():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    assert http_get(f"http://{HOST}:{port}/", timeout=1.0)[0] == 0
