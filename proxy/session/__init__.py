"""One client connection: split its bytes into commands, route, reply in order.

`client.py` holds the connection (protocol callbacks, the command loop, routing,
replies in order); beside it, as mixins: `raw_mode.py` (pub/sub on one master
connection, bytes forwarded both ways), `own_connections.py` (a client's upstream
connections of its own, and its writes on them retired or suspended when the master
is replaced or the lease lapses), `output.py` (output buffer limits, reading paused
and resumed, the half-close after the last reply). The commands the proxy serves
itself live in mixins of their own: `local_commands.py` (PING, ECHO, QUIT, SELECT, refusals),
`transactions.py` (MULTI/EXEC, WATCH), `connection_commands.py` (AUTH, HELLO,
RESET), `client_commands.py` (CLIENT, MONITOR, ACL LOG/WHOAMI, DEBUG, for this
proxy's own clients, with `client_registry.py`: the monitors, CLIENT PAUSE, the
proxy's ACL LOG and Redis' formats); `common.py` holds the modes, canned replies
and slot types.
Cluster mode's connection (`cluster_client.py`) is the same connection routing by
hash slot, with its fan-out (`cluster_fanout.py`) and transactions
(`cluster_transactions.py`) beside it.
"""

from .client import ClientSession
from .cluster_client import ClusterSession

__all__ = ["ClientSession", "ClusterSession"]
