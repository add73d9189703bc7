"""One client connection: split its bytes into commands, route, reply in order.

`client.py` holds the connection (protocol callbacks, the command loop, routing,
replies in order, flow control); the commands the proxy serves itself live in
mixins of their own: `local_commands.py` (PING, ECHO, QUIT, SELECT, refusals),
`transactions.py` (MULTI/EXEC, WATCH), `connection_commands.py` (AUTH, HELLO,
RESET, CLIENT); `common.py` holds the modes, canned replies and slot types.
"""

from .client import ClientSession

__all__ = ["ClientSession"]
