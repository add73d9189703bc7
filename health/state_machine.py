"""The replicated state: the committed topology of each shard. Raft entries are JSON.

A single master-replica set is the shard "" (cluster mode adds one shard per slot
range, issue 14). Entries and snapshots of shard "" keep the format of the versions
before shards (no "shard" field; the snapshot's "topology" key), so a rolling upgrade
mixes them freely.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from health.maintenance import FailoverRecord, Pause, bounded
from health.migration.plan import Migration, expand, merged, moved_slots, to_ranges
from proxy.routing.topology import History, Topology

log = logging.getLogger("health.state")

SINGLE = ""     # the shard of single-set mode

OnChange = Callable[[Topology, "Topology | None", str], None]
OnShardChange = Callable[[str, "Topology | None", "Topology | None", str], None]   # new None: forgotten


def merge_change(current: Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """The dynamic configuration's map after a committed `config` entry (as the leader validated
    it: proxy/process/dynamic_config.py; values are kept as committed, so every proxy version
    holds the same map)."""
    new: dict[str, Any] = {} if doc.get("replace") else dict(current)
    for key in doc.get("unset") or ():
        new.pop(str(key), None)
    new.update({str(k): v for k, v in (doc.get("set") or {}).items()})
    return new


class TopologyStateMachine:
    def __init__(self, on_change: OnChange, on_shard_change: OnShardChange | None = None,
                 on_migrations: Callable[[], None] | None = None) -> None:
        self.shards: dict[str, Topology] = {}
        self._on_change = on_change     # called for shard SINGLE (the data path routes by it)
        self._on_shard_change = on_shard_change     # called for every other shard (cluster mode)
        self.migrations: dict[str, Migration] = {}   # cluster mode: slot moves, by id (issue 15)
        self._on_migrations = on_migrations         # called after a migration's record changed
        self.pause: Pause | None = None             # maintenance mode: no automatic failover (issue 17)
        self.failover_history: list[FailoverRecord] = []    # the last changes of master, oldest first
        # dynamic configuration (issue 17): key -> value set through Raft, node tags included
        self.config: dict[str, Any] = {}
        self.on_config: Callable[[dict[str, Any]], None] | None = None     # called after it changed

    @property
    def cluster_shards(self) -> dict[str, Topology]:
        """Cluster mode: every shard but the single set's."""
        return {s: t for s, t in self.shards.items() if s != SINGLE}

    @property
    def topology(self) -> Topology | None:
        """The single set's committed topology (None until one is committed)."""
        return self.shards.get(SINGLE)

    @staticmethod
    def entry(topology: Topology, reason: str = "", shard: str = SINGLE) -> bytes:
        doc = {"op": "topology", "topology": topology.to_dict(), "reason": reason}
        if shard != SINGLE:
            doc["shard"] = shard
        return json.dumps(doc).encode()

    @staticmethod
    def history_entry(topology: Topology, history: History, shard: str = SINGLE) -> bytes:
        """A newer record of the master's replication history, for `topology`'s epoch only."""
        doc = {"op": "history", "epoch": topology.epoch, "master": topology.master, "history": history.to_dict()}
        if shard != SINGLE:
            doc["shard"] = shard
        return json.dumps(doc).encode()

    @staticmethod
    def shards_entry(shards: dict[str, Topology], reason: str = "") -> bytes:
        """Several shards' topologies in one entry (cluster mode's first topology: all or none)."""
        return json.dumps({"op": "shards", "shards": {s: t.to_dict() for s, t in shards.items()},
                           "reason": reason}).encode()

    @staticmethod
    def migration_entry(m: Migration, moved: list[int] | None = None, forget: str = "", reason: str = "") -> bytes:
        """A slot move's plan or progress; with `moved`, the slots that moved from its source
        to its target in this step (applied to the shards as they are then: see
        `migration.moved_slots`), and `forget`, the shard it emptied."""
        doc: dict = {"op": "migration", "migration": m.to_dict(), "reason": reason}
        if moved:
            doc["moved"] = [list(r) for r in to_ranges(moved)]
        if forget:
            doc["forget"] = forget
        return json.dumps(doc).encode()

    @staticmethod
    def pause_entry(pause: Pause | None) -> bytes:
        """Start (or replace) maintenance mode; None ends it."""
        return json.dumps({"op": "pause", "pause": pause.to_dict() if pause else None}).encode()

    @staticmethod
    def record_entry(record: FailoverRecord) -> bytes:
        """A change of master for the failover history (after its topology entry)."""
        return json.dumps({"op": "failover_record", "record": record.to_dict()}).encode()

    @staticmethod
    def config_entry(set_: dict[str, Any], unset: list[str] = (), replace: bool = False, by: str = "") -> bytes:
        """A change of the dynamic configuration (validated by the leader: see
        proxy/process/dynamic_config.py); `replace`: `set_` is the whole new map."""
        doc: dict[str, Any] = {"op": "config", "set": set_, "unset": list(unset), "by": by}
        if replace:
            doc["replace"] = True
        return json.dumps(doc).encode()

    def _set_config(self, new: dict[str, Any]) -> None:
        self.config = new
        if self.on_config is not None:
            self.on_config(dict(new))

    def _apply_pause(self, pause: Pause | None) -> None:
        old, self.pause = self.pause, pause
        if pause is not None:
            log.warning("event=failover_paused reason=%r until=%s by=%r", pause.reason,
                        "none" if pause.until is None else f"{pause.until:.3f}", pause.by)
        elif old is not None:
            log.warning("event=failover_resumed paused_by=%r", old.by)

    def apply(self, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            return  # no-op and membership entries are not ours
        if not isinstance(doc, dict):
            return
        if doc.get("op") in ("shards", "migration"):
            for shard, t in (doc.get("shards") or {}).items():
                self._newer(str(shard), Topology.from_dict(t), doc.get("reason", ""))
            if doc.get("op") == "migration":
                m = merged(self.migrations.get(doc["migration"]["id"]), Migration.from_dict(doc["migration"]))
                self.migrations[m.id] = m
                if doc.get("moved"):
                    moved = expand((int(a), int(b)) for a, b in doc["moved"])
                    for shard, t in moved_slots(self.shards, m.source, m.target, moved).items():
                        self._set(shard, t, doc.get("reason", ""))
                if doc.get("forget"):
                    self._forget(str(doc["forget"]), doc.get("reason", ""))
                if self._on_migrations is not None:
                    self._on_migrations()
            return
        if doc.get("op") == "pause":
            self._apply_pause(Pause.from_dict(doc.get("pause")))
            return
        if doc.get("op") == "config":
            self._set_config(merge_change(self.config, doc))
            return
        if doc.get("op") == "failover_record":
            self.failover_history = bounded(self.failover_history, FailoverRecord.from_dict(doc["record"]))
            return
        shard = str(doc.get("shard", SINGLE))
        current = self.shards.get(shard)
        if doc.get("op") == "history":
            h = History.from_dict(doc.get("history"))
            if h is not None and current is not None and current.epoch == doc.get("epoch") \
                    and current.master == doc.get("master"):
                self.shards[shard] = current.with_history(h)      # roles unchanged: nothing to re-route
            return
        if doc.get("op") != "topology":
            return
        self._newer(shard, Topology.from_dict(doc["topology"]), doc.get("reason", ""))

    def _newer(self, shard: str, new: Topology, reason: str) -> None:
        current = self.shards.get(shard)
        if current is None or new.epoch > current.epoch:
            if current is not None and shard != SINGLE:
                # a shard's slots change only by a migration's entries: a change of roles
                # decided on an older state must not bring back the slots it saw
                new = replace(new, slots=current.slots)
            self._set(shard, new, reason)

    def _set(self, shard: str, new: Topology, reason: str) -> None:
        old = self.shards.get(shard)
        self.shards[shard] = new
        if shard == SINGLE:
            self._on_change(new, old, reason)
        elif self._on_shard_change is not None:
            self._on_shard_change(shard, new, old, reason)

    def _forget(self, shard: str, reason: str) -> None:
        old = self.shards.pop(shard, None)
        if old is not None and self._on_shard_change is not None:
            self._on_shard_change(shard, None, old, reason)

    def snapshot(self) -> bytes:
        doc: dict = {"topology": self.topology.to_dict() if self.topology else None}
        others = {s: t.to_dict() for s, t in self.shards.items() if s != SINGLE}
        if others:
            doc["shards"] = others
        if self.migrations:
            doc["migrations"] = [m.to_dict() for m in self.migrations.values()]
        if self.pause is not None:
            doc["pause"] = self.pause.to_dict()
        if self.failover_history:
            doc["failover_history"] = [r.to_dict() for r in self.failover_history]
        if self.config:
            doc["config"] = self.config
        return json.dumps(doc).encode()

    def restore(self, data: bytes) -> None:
        doc = json.loads(data) if data else {}
        wanted = {s: Topology.from_dict(t) for s, t in (doc.get("shards") or {}).items()}
        if doc.get("topology"):
            wanted[SINGLE] = Topology.from_dict(doc["topology"])
        for shard, new in wanted.items():
            current = self.shards.get(shard)
            if current is None or new.epoch >= current.epoch:
                self._set(shard, new, "restored from snapshot")
        for shard in [s for s in self.shards if s != SINGLE and s not in wanted and "shards" in doc]:
            self._forget(shard, "restored from snapshot")
        for d in doc.get("migrations") or ():
            m = Migration.from_dict(d)
            self.migrations[m.id] = m
        pause = Pause.from_dict(doc.get("pause"))
        if pause != self.pause:
            self._apply_pause(pause)
        self.failover_history = [FailoverRecord.from_dict(d) for d in doc.get("failover_history") or ()]
        config = dict(doc.get("config") or {})
        if config != self.config:
            self._set_config(config)
        if self._on_migrations is not None:
            self._on_migrations()
