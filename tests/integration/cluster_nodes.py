"""Cluster-enabled redis-servers for cluster-mode tests: N masters (and replicas),
slots split evenly, joined with CLUSTER MEET, configured as the proxies need them
(`cluster-replica-no-failover yes`, `cluster-require-full-coverage no`)."""

from __future__ import annotations

from pathlib import Path

from proxy.routing.keyslot import SLOTS

from .harness import HOST, RedisServer, free_ports, wait_until

CLUSTER_ARGS = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
                "--cluster-replica-no-failover", "yes", "--cluster-require-full-coverage", "no"]


def even_ranges(shards: int) -> list[tuple[int, int]]:
    size = SLOTS // shards
    return [(i * size, SLOTS - 1 if i == shards - 1 else (i + 1) * size - 1) for i in range(shards)]


class ClusterNodes:
    """`masters` shards of one master and `replicas_per_master` replicas each."""

    def __init__(self, workdir: Path, masters: int = 3, replicas_per_master: int = 1,
                 binary: str | None = None, ranges: list[tuple[int, int]] | None = None) -> None:
        """`ranges`: each master's slots (default: split evenly)."""
        n = masters * (1 + replicas_per_master)
        self.workdir = Path(workdir)
        self.binary = binary
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
        self.ranges = list(ranges) if ranges is not None else even_ranges(masters)
        if len(self.ranges) != masters:
            raise ValueError(f"{masters} masters but {len(self.ranges)} slot ranges")

    def start(self, timeout: float = 30.0) -> ClusterNodes:
        for s in self.servers:
            s.spawn()
        for s in self.servers:
            s.wait_ready(timeout)
        for (start, end), m in zip(self.ranges, self.masters):
            with m.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
        first = self.servers[0]
        with first.client() as c:
            for s in self.servers[1:]:
                c.execute_command("CLUSTER", "MEET", HOST, s.port, self.bus_ports[s.port])
        wait_until(lambda: all(self._knows_all(s) for s in self.servers), timeout,
                   message="every node to know every other (CLUSTER MEET)")
        for i, r in enumerate(self.replicas):
            master = self.masters[i // self.replicas_per_master]
            with master.client(decode=True) as c:
                master_id = c.execute_command("CLUSTER", "MYID")
            with r.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", master_id)
        wait_until(lambda: all(self._state_ok(s) for s in self.servers), timeout,
                   message="cluster_state:ok on every node")
        wait_until(lambda: all(self._shards_seen(s) for s in self.servers), timeout,
                   message="every node to see each replica in its shard (CLUSTER SHARDS)")
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

    def _knows_all(self, s: RedisServer) -> bool:
        with s.client(decode=True, timeout=2) as c:
            return len([ln for ln in c.execute_command("CLUSTER", "NODES").splitlines() if ln.strip()]) \
                == len(self.servers)

    def _shards_seen(self, s: RedisServer) -> bool:
        with s.client(timeout=2) as c:
            return len(c.execute_command("CLUSTER", "SHARDS")) == len(self.masters)

    @staticmethod
    def _state_ok(s: RedisServer) -> bool:
        with s.client(decode=True, timeout=2) as c:
            return c.execute_command("CLUSTER", "INFO").startswith("cluster_state:ok")

    def cleanup(self) -> None:
        for s in self.servers:
            s.cleanup()
