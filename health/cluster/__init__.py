"""Cluster mode: one shard controller per shard (`controller`), the shards a cluster has
(`discovery`), the node settings the proxies rely on (`node_config`), and the cluster-only
steps of a shard's failover (`takeover_epoch`, `sync_hold`)."""
