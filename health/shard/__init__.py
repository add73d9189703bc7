"""One shard's controller (a single master-replica set is one shard): the proxies' views
reach the Raft leader (`reports`), which decides failovers by the pure functions of
`decide`, carries out switchovers (`switchover`) and reconciles Redis roles (`controller`)."""
