"""The proxy's own control connections to Redis (probes, reconciler, switchover).

They authenticate as the control user (`redis_control_username` /
`redis_control_password`, falling back to the data user), which needs only the
commands listed under "Least-privilege Redis users" in README.md.  redis-py's
connect-time `CLIENT SETINFO` is turned off so that such a user needs no
permission for it (Redis 7.2+ would refuse it and log an ACL denial on every
connect).

Inside redis-py they retry once, at once, and only a connection found closed (a
node restarted since the last command): its default (10 retries with backoff,
timeouts included) kept one command on a frozen node busy for 8 s at a 0.5 s
timeout, stalling the control loop that awaited it. Every caller already
retries at its own pace.
"""

from __future__ import annotations

import inspect
import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from health.migration.reconcile import cluster_state

# Newer redis-py spells "no CLIENT SETINFO" driver_info=None (lib_name/lib_version are deprecated there).
_NO_SETINFO = {"driver_info": None} if "driver_info" in inspect.signature(aioredis.Redis.__init__).parameters \
    else {"lib_name": None, "lib_version": None}


def reply_text(x) -> str:
    """A reply as text, whether the client decodes responses or not."""
    return x.decode() if isinstance(x, bytes) else str(x)


async def pipelined(client: aioredis.Redis, commands: list[tuple], raise_on_error: bool = True) -> list:
    """Send `commands` in one round trip (a pipeline, not a transaction) and return their
    replies in order; with `raise_on_error=False` a command Redis refused has its
    ResponseError in its place (a lost connection still raises)."""
    if not commands:
        return []
    pipe = client.pipeline(transaction=False)
    for cmd in commands:
        pipe.execute_command(*cmd)
    return await pipe.execute(raise_on_error=raise_on_error)


async def cluster_node_view(client: aioredis.Redis, addr: str, warned: set[str]) -> tuple[str, str, str | None]:
    """A cluster node's id, its `CLUSTER NODES` and its `cluster_state` line's value from
    `CLUSTER INFO`, in one round trip. The state is None when the node's ACL refuses
    `CLUSTER INFO` (a control user set up from an earlier README, without `+cluster|info`):
    logged once per node (`warned`, the caller's set of nodes already logged), and the
    caller goes on unchecked, as before."""
    my_id, nodes, info = await pipelined(client, [("CLUSTER", "MYID"), ("CLUSTER", "NODES"), ("CLUSTER", "INFO")],
                                         raise_on_error=False)
    for reply in (my_id, nodes):
        if isinstance(reply, Exception):
            raise reply
    if isinstance(info, ResponseError):
        if addr not in warned:
            warned.add(addr)
            logging.getLogger("health.migration").warning(
                "event=cluster_state_unchecked node=%s error=%r (grant the control user +cluster|info)", addr,
                str(info))
        return reply_text(my_id), reply_text(nodes), None
    return reply_text(my_id), reply_text(nodes), cluster_state(reply_text(info))


def control_tls(cfg) -> dict:
    """redis-py's TLS arguments for `tls_upstream` (files are read per connection, so a
    rotated client certificate is picked up by the next reconnect)."""
    if not cfg.tls_upstream:
        return {}
    return {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": cfg.tls_upstream_ca_cert_file or None,
            "ssl_certfile": cfg.tls_upstream_cert_file or None, "ssl_keyfile": cfg.tls_upstream_key_file or None,
            "ssl_check_hostname": cfg.tls_upstream_check_hostname}


def control_client(addr: str, *, username: str, password: str, timeout: float, tls: dict | None = None,
                   **kw) -> aioredis.Redis:
    """A redis-py client for `addr` (host:port) that logs in as the control user
    (over TLS with `tls`, from `control_tls`)."""
    host, _, port = addr.rpartition(":")
    kw.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    return aioredis.Redis(host=host, port=int(port), username=username or None, password=password or None,
                          socket_timeout=timeout, socket_connect_timeout=timeout, **_NO_SETINFO, **(tls or {}),
                          **kw)
