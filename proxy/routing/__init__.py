"""Where a command goes: the committed topology (shared with `health/`, which decides
it), the router that picks a node for each command, and cluster mode's hash slots and
slot map. Pure: no sockets here."""
