"""A Redis Sentinel compatible endpoint on every proxy (issue 8).

Clients written for Sentinel (redis-py `Sentinel`, Jedis `JedisSentinelPool`,
go-redis `FailoverClient`, ...) ask a Sentinel where the master is, then
connect to that Redis node directly.  Each proxy answers those questions on
its `sentinel_port` from the topology the proxies committed through Raft, so
such clients can be pointed at the proxies before they move to the single
proxy endpoint (docs/sentinel.md).

What is served (the subset clients use, reply formats as Redis Sentinel 7.0):

* `SENTINEL get-master-addr-by-name | master | masters | replicas | slaves |
  sentinels | ckquorum | myid | pending-scripts | help`
* `PING`, `INFO`, `ROLE`, `HELLO [2|3]`, `AUTH`, `CLIENT SETNAME|GETNAME|SETINFO|ID`,
  `QUIT`, `RESET`, `COMMAND` (empty)
* pub/sub: `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE` with the
  events `+sdown`, `-sdown`, `+odown`, `-odown`, `+switch-master`, `+slave`.

Commands that would change what is monitored (`SENTINEL failover|set|remove|
monitor|reset|config|...`) are refused: the proxies decide through Raft.

Answers come from the committed topology only.  A proxy without a lease
answers like a Sentinel that lost its quorum: `SENTINEL ckquorum` fails with
`-NOQUORUM`, every other answer is the last committed state.

The other proxies' Sentinel addresses come from their `/status` JSON
(`"sentinel": {"port": ...}`), polled over their admin URLs and cached; the
same poll tells whether a quorum of proxies sees the master down (`o_down`).

Wiring (three calls; see `attach_sentinel`): build it in `ProxyServer.__init__`,
`await start()` / `await stop()` with the server, and call
`on_topology(new, old, reason)` from `ProxyServer._apply_topology`.
"""

from .service import (
    DEFAULT_MASTER_NAME,
    DEFAULT_PORT,
    SENTINEL_PEER_PATH,
    PeerInfo,
    SentinelService,
    attach_sentinel,
    peer_status,
    sentinel_id,
    sentinel_status,
)
from .session import SentinelSession

__all__ = ["DEFAULT_MASTER_NAME", "DEFAULT_PORT", "SENTINEL_PEER_PATH", "PeerInfo", "SentinelService",
           "SentinelSession", "attach_sentinel", "peer_status", "sentinel_id", "sentinel_status"]
