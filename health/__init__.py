"""The control side: probes of the Redis nodes, failover decisions, and the reconciler that
makes Redis roles match the committed topology.

* `probes/`: every proxy asks every node `INFO replication` (its view of the nodes);
* `shard/`: one master-replica set's controller: views to the leader, objectively down,
  failover and switchover, the reconciler; the decisions are pure (`shard/decide.py`);
* `cluster/`: cluster mode: the same per shard, plus what cluster-enabled nodes need;
* `migration/`: moving hash slots between shards;
* here: the replicated state (`state_machine`, `maintenance`) and what all of them share.

Nothing here imports the client data path (`proxy.session`)."""
