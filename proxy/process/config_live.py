"""Apply the dynamic configuration (proxy/process/dynamic_config.py) to a running proxy.

When a `config` entry applies (or a snapshot is restored), every proxy computes the
effective value of each cluster-wide key (Raft's override, else its own file's) and
sets what changed on its running configuration and on the parts that copied it: the
probes (interval, timeout), failure detection (`down_after_ms`), the controller's
intervals, the routers' read policy and node tags, and the write hold. Sessions read
`ack` and `hold_ms` per command; `read_your_writes` (and the read policy's effect on it)
applies to connections made after the change.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import ConfigError, probe_interval_problem
from .dynamic_config import DYNAMIC_KEYS, effective, node_tags, valid_overrides

log = logging.getLogger("proxy.config")
PAIR_KEYS = ("probe_interval_ms", "down_after_ms")     # checked together (pair_problems)


class LiveConfig:
    """The proxy's own values of the dynamic keys (its base) and Raft's overrides."""

    def __init__(self, server) -> None:
        self.server = server
        cfg = server.cfg
        self.base: dict[str, Any] = {k: getattr(cfg, k) for k in DYNAMIC_KEYS}
        self.sources: dict[str, str] = dict(getattr(cfg, "sources", {}))
        self.overrides: dict[str, Any] = {}
        self.tags = {}

    def values(self) -> dict[str, tuple[Any, str]]:
        """key -> (effective value, source). A wrong pair of probe_interval_ms and down_after_ms
        (committed by an older leader, or this proxy's file differs) stays at the running values."""
        values = self.values_with(self.overrides)
        if pair_problems(values):
            for key in PAIR_KEYS:
                values[key] = (getattr(self.server.cfg, key), "running")
        return values

    def values_with(self, overrides: dict[str, Any]) -> dict[str, tuple[Any, str]]:
        """key -> (value, source) were Raft's map `overrides`."""
        return effective(self.base, self.sources, overrides)

    def apply(self, overrides: dict[str, Any]) -> None:
        """The replicated map changed: apply what differs from the running values."""
        self.overrides = dict(overrides)
        _, unusable = valid_overrides(overrides)
        for exc in unusable:        # set by a newer proxy version, say
            log.error("event=config_ignored error=%r", str(exc))
        cfg = self.server.cfg
        changed = {}
        for problem in pair_problems(self.values_with(overrides)):
            log.error("event=config_ignored keys=%s error=%r", ",".join(PAIR_KEYS), str(problem))
        for key, (value, source) in self.values().items():
            if getattr(cfg, key) != value:
                setattr(cfg, key, value)
                changed[key] = value
                log.warning("event=config_applied key=%s value=%s source=%s", key, value, source)
        tags = node_tags(overrides)
        if tags != self.tags:
            for addr in sorted(set(tags) | set(self.tags)):
                if tags.get(addr) != self.tags.get(addr):
                    log.warning("event=config_applied key=tags.%s value=%r source=raft", addr, tags.get(addr))
            self.tags = tags
        self._propagate(changed)

    def set_base(self, values: dict[str, Any]) -> None:
        """SIGHUP read the proxy's file again: its values of the dynamic keys are the new
        base (they apply where Raft sets nothing)."""
        self.base.update({k: v for k, v in values.items() if k in DYNAMIC_KEYS})
        self.apply(self.overrides)

    def _propagate(self, changed: dict[str, Any]) -> None:
        server, cfg = self.server, self.server.cfg
        server.router.tags = self.tags
        if server.cluster is not None:
            server.cluster.set_tags(self.tags)
        if "read_policy" in changed:
            server.router.read_policy = cfg.read_policy
            if server.cluster is not None:
                server.cluster.set_read_policy(cfg.read_policy)
        if "hold_ms" in changed:
            server.hold_s = cfg.hold_ms / 1000.0
        if "down_after_ms" in changed:
            server.health.down_after = cfg.down_after_ms / 1000.0
        if changed.keys() & {"down_after_ms", "probe_interval_ms"}:
            for prober in server.probers.values():
                prober.interval = cfg.probe_interval_ms / 1000.0
                prober.timeout = cfg.down_after_ms / 1000.0
                prober.kick()
            server.controller.timings_changed()
        dataplane = getattr(server, "dataplane", None)
        if dataplane is not None:
            dataplane.refresh()         # read policy, ack, hold_ms: the C thread follows at once


def pair_problems(values: dict[str, tuple[Any, str]]) -> list[ConfigError]:
    """What is wrong with the dynamic keys together (each one alone was checked already)."""
    problem = probe_interval_problem(values["probe_interval_ms"][0], values["down_after_ms"][0])
    return [problem] if problem is not None else []
