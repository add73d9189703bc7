"""Redis map replies as dicts: RESP3 gives a dict, RESP2 the same map flattened into
[key, value, key, value, ...] (COMMAND key specs, CLUSTER SHARDS)."""

from __future__ import annotations


def as_map(reply) -> dict[str, object]:
    """A map reply (either form) as a dict with str keys."""
    items = reply.items() if isinstance(reply, dict) else zip(reply[0::2], reply[1::2])
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in items}
