"""Raft consensus for the proxies.

* ``raft.messages`` - entries, snapshots, hard state, RPC messages (frozen dataclasses)
* ``raft.codec``    - their one wire form (versioned JSON-able dicts, base64 bytes)
* ``raft.log``      - the in-memory log (snapshot + entries)
* ``raft.core``     - the pure state machine (ticks, steps, Ready/advance); no I/O
* ``raft.storage``  - hard state, CRC-checked log and snapshot in a data dir
* ``raft.transport``- Transport interface, in-memory network, aiohttp client + routes
* ``raft.node``     - RaftNode, the asyncio driver the proxy uses

See tests/sim/ for the deterministic cluster simulator that checks the core.
"""
