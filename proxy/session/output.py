"""What a client connection may be owed and how it ends: the output buffer limits
(`client_output_buffer_limit` and its soft limit, as Redis' own), reading paused and
resumed, and the half-close of a connection that is done (QUIT, a protocol error, a
stopping proxy) after its last reply."""

from __future__ import annotations

import asyncio
import time

from ..upstream import Upstream
from .common import log

DRAIN_LINGER_S = 0.3   # after its last reply, how long a stopping proxy waits for a client to close first


def _abort_once_flushed(t: asyncio.Transport) -> None:
    """Drop a closed TLS connection whose client has not answered close_notify, once the
    replies it was owed have left (a client still reading them keeps it a while longer;
    drain_timeout_ms bounds that)."""
    if t.get_write_buffer_size():
        asyncio.get_running_loop().call_later(DRAIN_LINGER_S, _abort_once_flushed, t)
    else:
        t.abort()


class OutputControl:
    """Mixed into ClientSession (proxy/session/client.py): it uses the session's
    `transport`, `queued`, `soft_since`, `reading_paused` and closing state."""

    def output_overflow(self) -> None:
        """Replies owed to this client passed client_output_buffer_limit."""
        if self.closed:
            return
        log.warning("client %s closed: %d reply bytes queued, over client_output_buffer_limit",
                    self._peer(), self.queued + self.transport.get_write_buffer_size())
        self.server.count_rejected("output_buffer")
        self.closed = True
        self.transport.abort()

    def _check_output(self) -> None:
        size = self.transport.get_write_buffer_size()
        cfg = self.server.cfg
        if size > cfg.client_output_buffer_limit:
            log.warning("client %s closed: output buffer %d bytes over client_output_buffer_limit",
                        self._peer(), size)
            self.server.count_rejected("output_buffer")
            self.transport.abort()
        elif size > cfg.client_output_buffer_soft_limit:
            now = time.monotonic()
            if self.soft_since is None:
                self.soft_since = now
                self.server.watch_soft_limit(self)
            elif now - self.soft_since > cfg.client_output_buffer_soft_seconds:
                log.warning("client %s closed: output buffer over the soft limit for %ss",
                            self._peer(), cfg.client_output_buffer_soft_seconds)
                self.transport.abort()
        else:
            self.soft_since = None

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def upstream_resumed(self, up: Upstream) -> None:
        if self.blocked_on is up:
            self.blocked_on = None
            if not self.waiting:
                self._resume_reading()

    def drain(self) -> None:
        """The proxy is stopping: read nothing more, answer what was sent, then close.

        A blocked (BLPOP...) or subscribed client is closed at once: its reply may never
        come, and Redis drops a blocked command whose connection closes.  Commands not
        read yet (or held for a master, which are not sent) stay unanswered, so not
        executed: the client retries them elsewhere."""
        if self.closed:
            return
        self.closing = self.draining = True
        self._pause_reading()
        if self.raw is not None or self.blocked_on is not None:
            self.transport.close()
        elif not self.pending:
            self._half_close()

    def _half_close(self) -> None:
        """FIN after the last reply, then read and drop what the client still sends until
        it closes, or DRAIN_LINGER_S passed (an idle pooled client may never read): closing
        with its unread commands in our socket would send a RST at once, and the kernel
        then drops the replies not yet sent."""
        t = self.transport
        if self.eof_sent:
            return
        self.eof_sent = True
        if t.can_write_eof():
            t.write_eof()
            self._resume_reading()
            asyncio.get_running_loop().call_later(DRAIN_LINGER_S, t.close)
        else:
            # TLS: close() sends close_notify after the replies, then waits for the client's
            # close_notify, which an idle pooled client never sends (it is not reading):
            # without the abort the connection lasted until drain_timeout_ms cut it
            t.close()
            asyncio.get_running_loop().call_later(DRAIN_LINGER_S, _abort_once_flushed, t)

    def _peer(self) -> str:
        if self.transport is None:
            return "?"
        peer = self.transport.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"
