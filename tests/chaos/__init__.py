"""Fault-injection ("chaos") suite: real processes, real kernel-level faults, a checker (issue 12).

* `netfaults`  one nftables table per run (drops, one-way cuts, marks for netem latency),
               per-process cgroup v2 placement, stale-table sweep, cleanup on every exit path
* `disk`       a small tmpfs under a proxy's data dir, to fill it up
* `cluster`    3 redis-server + 3 proxies (or 3 Sentinels) with every process in its cgroup
* `faults`     seeded, replayable fault schedules and the injector that runs them
* `workloads`  pipelined / MULTI / Lua / INCR / queue / pub-sub clients recording every ack
* `checker`    what must hold after the faults are healed
"""
