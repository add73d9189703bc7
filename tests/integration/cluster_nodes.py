"""Cluster-enabled redis-servers for cluster-mode tests: N masters (and replicas),
slots split evenly (or as given), joined with CLUSTER MEET, configured as the proxies need them
(`cluster-replica-no-failover yes`, `cluster-require-full-coverage no`,
`cluster-allow-replica-migration no`). The
cluster is made by the product's proxy/process/cluster_create.py, as the demo
and the Kubernetes Job make theirs."""

from __future__ import annotations

from pathlib import Path

from proxy.process.cluster_create import (
    CLUSTER_SERVER_ARGS,
    create_cluster,
    even_ranges,
)

from .harness import RedisServer, free_ports

CLUSTER_ARGS = CLUSTER_SERVER_ARGS
__all__ = ["CLUSTER_ARGS", "ClusterNodes", "even_ranges"]


class ClusterNodes:
    """`masters` shards of one master and `replicas_per_master` replicas each."""

    def __init__(self, workdir: Path, masters: int = 3, replicas_per_master: int = 1,
                 binary: str | None = None, ranges: list[tuple[int, int]] | None = None) -> None:
        """`ranges`: each master's slots (default: split evenly)."""
        if ranges is not None and len(ranges) != masters:
            raise ValueError(f"{masters} masters but {len(ranges)} slot ranges")
        self.workdir = Path(workdir)
        self.binary = binary
        self.ranges = list(ranges) if ranges is not None else None
        n = masters * (1 + replicas_per_master)
        ports = free_ports(2 * n)
        self.servers = []
        self.bus_ports: dict[int, int] = dict(zip(ports[:n], ports[n:]))
        for p, bus in self.bus_ports.items():
            s = RedisServer(self.workdir, p, binary=binary)
            # an explicit bus port: the default, port + 10000, does not exist for a free port above 55535
            s.extra_args = list(CLUSTER_ARGS) + ["--cluster-config-file", f"nodes-{p}.conf",
                                                 "--cluster-port", str(bus)]
            self.servers.append(s)
        self.masters = self.servers[:masters]
        self.replicas = self.servers[masters:]
        self.replicas_per_master = replicas_per_master

    def start(self, timeout: float = 30.0) -> ClusterNodes:
        for s in self.servers:
            s.spawn()
        for s in self.servers:
            s.wait_ready(timeout)
        for (start, end), m in zip(self.ranges or [], self.masters):
            with m.client() as c:       # create_cluster leaves a master that holds slots as it is
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
        create_cluster([s.addr for s in self.masters], [s.addr for s in self.replicas], timeout=timeout)
        return self

    def spare_nodes(self, count: int, timeout: float = 30.0) -> list[RedisServer]:
        """Start `count` more cluster-enabled nodes (same settings, explicit bus ports) that are
        not in the cluster yet: for `cluster add-shard` (issue 15). They are listed in `servers`
        (and cleaned up with the rest) but in neither `masters` nor `replicas`."""
        ports = free_ports(2 * count)
        new = []
        for p, bus in zip(ports[:count], ports[count:]):
            self.bus_ports[p] = bus
            s = RedisServer(self.workdir, p, binary=self.binary)
            s.extra_args = list(CLUSTER_ARGS) + ["--cluster-config-file", f"nodes-{p}.conf", "--cluster-port", str(bus)]
            new.append(s)
        self.servers.extend(new)
        for s in new:
            s.spawn()
        for s in new:
            s.wait_ready(timeout)
        return new

    def cleanup(self) -> None:
        for s in self.servers:
            s.cleanup()
