"""`CLUSTER NODES` read: one entry per line. What `proxy/process/cluster_create.py` forms
a cluster by and `health/cluster/takeover_epoch.py` checks a takeover's epoch with."""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[int, int]


@dataclass(frozen=True)
class NodeEntry:
    """One line of CLUSTER NODES."""

    node_id: str
    host: str
    port: int
    bus_port: int
    flags: frozenset[str]
    master_id: str | None          # the master it replicates, None for a master
    slots: tuple[Range, ...]
    config_epoch: int = 0          # a replica's line shows its master's

    @property
    def myself(self) -> bool:
        return "myself" in self.flags

    @property
    def gone(self) -> bool:
        """Failed, address unknown, or still a handshake: not a member to count."""
        return bool(self.flags & {"fail", "noaddr", "handshake"})


def parse_cluster_nodes(text: str) -> list[NodeEntry]:
    """CLUSTER NODES -> entries (slots being imported or migrated, `[...]`, are left out)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split(",", 1)[0]              # ip:port@cport[,hostname]
        hostport, _, bus = addr.partition("@")
        host, _, port = hostport.rpartition(":")
        slots = []
        for s in parts[8:]:
            if s.startswith("["):
                continue
            start, _, end = s.partition("-")
            slots.append((int(start), int(end or start)))
        out.append(NodeEntry(parts[0], host, int(port or 0), int(bus or 0), frozenset(parts[2].split(",")),
                             None if parts[3] == "-" else parts[3], tuple(slots), int(parts[6])))
    return out
