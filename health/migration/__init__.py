"""Moving hash slots between shards: the replicated plan (`plan`), its execution on the
leader (`driver`), Valkey 9's atomic slot migration (`atomic`), and where the slots really
are when a move was interrupted (`reconcile`)."""
