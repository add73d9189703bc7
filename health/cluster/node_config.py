"""What a cluster-enabled Redis/Valkey node must be configured with for the proxies to
be the only failover authority (issue 14, "The model"), checked from `CONFIG GET`.

* `cluster-replica-no-failover yes`: else the node's replicas elect a new master by
  themselves after `cluster-node-timeout`, racing the proxies' fenced decision (two
  authorities, two masters for a range: the split brain the proxies exist to prevent).
* `cluster-require-full-coverage no`: else one lost shard makes every node refuse
  every command, and the other shards stop serving too.
* `cluster-allow-replica-migration no`: else a master whose last slot moved away
  makes itself a replica of the slot's new owner, and a shard with more replicas gives
  one to a shard left with none: roles changing behind the proxies' back (a third
  authority), and a source master that a slot move (remove-shard) must still reach.
* `cluster-allow-reads-when-down yes` is not required: the proxies send reads to a
  shard's nodes only while they hold a lease and the shard has a master.
"""

from __future__ import annotations

REQUIRED = {
    "cluster-replica-no-failover": ("yes", ("its replicas would fail over by themselves after cluster-node-timeout, "
                                            "racing the proxies' decision")),
    "cluster-require-full-coverage": ("no", "one lost shard would stop every shard from serving"),
    "cluster-allow-replica-migration": ("no", ("a master emptied by a slot move would turn itself into a replica, "
                                               "and replicas would move between shards, behind the proxies' back")),
}


def config_values(config) -> dict[str, str]:
    """CONFIG GET's reply (a dict, or a flat [name, value, ...] list) as str -> str."""
    items = config.items() if isinstance(config, dict) else zip(config[0::2], config[1::2])
    return {(k.decode() if isinstance(k, bytes) else str(k)).lower(): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in items}


def node_config_problems(addr: str, config) -> list[str]:
    """One line per setting of node `addr` that is not what the proxies need."""
    got = config_values(config)
    out = []
    if got.get("cluster-enabled", "yes") != "yes":
        return [f"{addr}: cluster-enabled is no: not a cluster node"]
    for key, (want, why) in REQUIRED.items():
        have = got.get(key)
        if have is None:
            out.append(f"{addr}: {key} unknown (CONFIG GET gave nothing): set it to {want}")
        elif have.lower() != want:
            out.append(f"{addr}: {key} is {have}, must be {want}: {why}")
    return out
