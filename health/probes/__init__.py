"""Probes of the Redis nodes: `probe` (what each node answered, when it counts as down),
`connection` (the probes' own bare RESP connection)."""
