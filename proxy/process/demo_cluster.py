"""`redis-raft-proxy demo --shards N`: the local demo in cluster mode.

N masters and N replicas, cluster-enabled (`cluster-replica-no-failover yes`,
`cluster-require-full-coverage no`, `cluster-allow-replica-migration no`, as the
proxies require), on --redis-port .. +2N-1 with their cluster bus ports right after them
(+2N .. +4N-1); proxy/process/cluster_create.py gives the masters the slots
evenly, meets them and makes replica i follow master i. The three proxies get
every node in `cluster_nodes` and find the shards with CLUSTER SHARDS. The
demo says it is up once every proxy's /status shows every shard with a master.

A dead node is started again with the same command: its nodes.conf (in its
data dir) brings it back into the cluster, and the proxies' leader makes a
returning old master a replica of its shard. No Sentinel ports: Sentinel
clients know one master, a cluster has N.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from .cluster_create import (
    CLUSTER_SERVER_ARGS,
    ClusterCreateError,
    create_cluster,
    even_ranges,
)
from .demo import (
    DEMO_REDIS_ARGS,
    Child,
    Layout,
    proxy_children,
    redis_server_binary,
    wait_proxies_serving,
)
from .devcerts import ClusterCerts

MAX_SHARDS = 16


def check_options(args) -> str | None:
    """Why the demo's options cannot run as a cluster, or None."""
    if not 1 <= args.shards <= MAX_SHARDS:
        return f"--shards must be 1 to {MAX_SHARDS}, got {args.shards}"
    if args.redis_port + 4 * args.shards - 1 > 65535:
        return f"--redis-port {args.redis_port} leaves no room for {2 * args.shards} nodes and their bus ports"
    return None


def node_ports(args) -> tuple[list[int], list[int]]:
    """(client ports, cluster bus ports) of the 2N nodes: masters first, then replicas."""
    n = 2 * args.shards
    return [args.redis_port + i for i in range(n)], [args.redis_port + n + i for i in range(n)]


def cluster_redis_children(args, datadir: str, certs: ClusterCerts | None = None) -> list[Child]:
    server = redis_server_binary(args)
    ports, buses = node_ports(args)
    out = []
    for port, bus in zip(ports, buses):
        d = os.path.join(datadir, f"redis-{port}")
        os.makedirs(d, exist_ok=True)
        listen = certs.redis_args(port) + ["--port", "0", "--tls-cluster", "yes"] if certs else ["--port", str(port)]
        # nodes.conf in the node's own dir: a restart with the same command rejoins the cluster
        argv = [server, *listen, "--dir", d, *DEMO_REDIS_ARGS, *CLUSTER_SERVER_ARGS,
                "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus)]
        out.append(Child(f"redis-{port}", argv, os.path.join(datadir, f"redis-{port}.log"), dict(os.environ)))
    return out


def shards_served(doc: dict, shards: int) -> bool:
    """A proxy's /status: cluster mode, `shards` shards, each with a master."""
    got = doc.get("shards") or []
    return doc.get("mode") == "cluster" and len(got) == shards and all(s.get("master") for s in got)


def cluster_layout(args, extra: list[str], datadir: str, certs: ClusterCerts | None) -> Layout:
    ports, buses = node_ports(args)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    masters, replicas = addrs[:args.shards], addrs[args.shards:]
    client_kwargs = certs.redis_py_kwargs() if certs else {}
    upstream = ["--cluster-nodes", ",".join(addrs), "--sentinel-port", "0"]
    proxies = proxy_children(args, extra, datadir, certs, upstream=upstream)

    def prepare(stopping: Callable[[], bool]) -> bool:
        try:
            create_cluster(masters, replicas, client_kwargs=client_kwargs, timeout=60)
        except ClusterCreateError as exc:
            print(f"demo: cannot make the cluster: {exc} (see {datadir}/redis-*.log)", file=sys.stderr, flush=True)
            return False
        return True

    def ready(stopping: Callable[[], bool]) -> None:
        wait_proxies_serving(args, len(proxies), certs, stopping, lambda doc: shards_served(doc, args.shards),
                             f"{args.shards} shards with a master", datadir)

    lines = []
    for i, (start, end) in enumerate(even_ranges(args.shards)):
        lines.append(f"shard {i + 1}:   slots {start}-{end}: {masters[i]} (master), {replicas[i]}")
    lines.append(f"redis:     cluster-enabled, bus ports {buses[0]}-{buses[-1]}"
                 + ("; TLS only, client certificate required" if certs else ""))
    all_ports = ports + buses + [base + i for base in (args.proxy_port, args.admin_port) for i in range(3)]
    return Layout(cluster_redis_children(args, datadir, certs), ports, proxies, all_ports, prepare, ready, lines)
