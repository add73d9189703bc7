"""The control loop: views to the leader, failover decisions, reconciliation.

Every proxy sends its view of the Redis nodes to the Raft leader each probe
interval.  The leader declares the master objectively down only when a
quorum of fresh views (its own included) say so, proposes the next topology
through Raft, and runs the reconciler that makes Redis roles match the
committed topology.  Decisions are the pure functions of `health.shard.decide`.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from health.cancellation import raise_if_cancelled
from health.cluster.sync_hold import hold as hold_full_syncs
from health.cluster.sync_hold import release as release_full_syncs
from health.cluster.takeover_epoch import make_takeover_win
from health.errors import NotLeaderError
from health.histogram import FAILOVER_BUCKETS, SWITCHOVER_BUCKETS, Histogram
from health.maintenance import (
    BUSY,
    RESTARTED_EMPTY,
    FailoverRecord,
    Pause,
    busy_kill_grace_s,
    busy_master_left_alone,
    down_cause,
    pause_expired,
    pause_until,
)
from health.probes.probe import RoundWaiter
from health.raft_events import RaftEvents
from health.redis_control import control_client, control_tls
from health.shard.decide import (
    LeaderState,
    NodeView,
    choose_new_master,
    freshest,
    history_due,
    master_lost_history,
    never_seen,
    next_history,
    objectively_down,
    parent_keeper,
    reconcile,
    refuse_to_act,
    report_due,
    report_key,
)
from health.shard.reports import Reports
from health.shard.switchover import Switchover
from health.state_machine import SINGLE, TopologyStateMachine
from proxy.routing.topology import History, Topology
from raft.transport import http_session

log = logging.getLogger("health.controller")

UNKNOWN_AGE_S = 1e9          # a node never answered: its view is as old as can be
DECISION_INTERVAL_S = 0.1    # the longest time between two steps (probes may be further apart)
# Commit the master's growing offset at most this often (a new replication id at once).
# Each entry costs every proxy an fsync (its apply comes before that save, so a follower's
# lease does not wait for the disk): rarely enough to be cheap, often enough to catch a
# master restarted from an old dump.
HISTORY_INTERVAL_S = 10.0
SYNC_HOLD_RETRY_S = 30.0   # how often a leader tries again to hold syncs it could not hold (and logs why)


class ShardLog(logging.LoggerAdapter):
    """A shard's controller logs each event with `shard=ID` appended."""

    def process(self, msg, kwargs):
        return f"{msg} shard={self.extra}", kwargs

    def __init__(self, logger: logging.Logger, shard: str) -> None:
        super().__init__(logger, shard)      # (LoggerAdapter keeps `extra` as given)


class StandaloneConsensus:
    """A single proxy without peers: it is its own quorum."""

    def __init__(self, node: str, sm: TopologyStateMachine) -> None:
        self.node_id = node
        self._sm = sm
        self.commit_index = 0
        self.applied_index = 0
        self.peers = {node: ""}

    role = "leader"
    term = 1

    @property
    def leader_id(self) -> str:
        return self.node_id

    @property
    def members(self) -> list[str]:
        return [self.node_id]

    def lease_held(self) -> bool:
        return True

    def lease_waits_for_apply(self) -> bool:
        return False

    fence_timeout_s = 0.0

    def writes_fenced(self, index: int) -> bool:
        return True

    async def propose(self, data: bytes, timeout: float) -> None:
        self.commit_index += 1
        self.applied_index += 1
        self._sm.apply(data)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def raft_status(consensus) -> dict:
    if getattr(consensus, "core", True) is None:   # RaftNode not started yet
        return {"role": "follower", "term": 0, "leader": None, "members": [], "learners": [], "commit_index": 0,
                "applied_index": 0}
    cluster = getattr(consensus, "cluster", None)
    # a learner (issue 16) is a follower that never votes: shown as "learner"
    learner = getattr(consensus, "is_learner", False) and consensus.role == "follower"
    return {"role": "learner" if learner else consensus.role, "term": consensus.term,
            "leader": consensus.leader_id, "members": list(consensus.members),
            "learners": list(getattr(consensus, "learners", [])), "commit_index": consensus.commit_index,
            "applied_index": consensus.applied_index,
            "cluster_id": (cluster.cluster_id or None) if cluster is not None else None}


class Controller(Reports, Switchover):
    """Runs on every proxy; acts (decides, reconciles) only on the leader."""

    def __init__(self, server, consensus, sm: TopologyStateMachine, *, shard: str = SINGLE,
                 shared_with: Controller | None = None) -> None:
        self.server = server
        self.cfg = server.cfg
        self.consensus = consensus
        self.sm = sm
        self.shard = shard      # the shard this controller decides for (cluster mode: one each)
        self.log = log if shard == SINGLE else ShardLog(log, shard)
        self.parent = shared_with
        # a shard's controller shares the views, clients and counters of the one that runs the loop
        self.views: dict[str, tuple[float, dict[str, NodeView]]] = shared_with.views if shared_with else {}
        # node -> when this proxy sent the probe behind its own view in `views` (the leader's)
        self._own_sent: dict[str, float] = shared_with._own_sent if shared_with else {}
        self._report_key: tuple | None = None
        self._report_at = 0.0
        self.timings_changed()
        self._http: aiohttp.ClientSession | None = None
        self._clients: dict[str, aioredis.Redis] = shared_with._clients if shared_with else {}
        self._proposing = False
        self._last_failover_at = 0.0
        self._acted: dict[tuple[str, int], float] = {}
        # cluster mode: emptied masters whose full syncs this leader held (sync_hold), with
        # the time of the last check of each
        self._sync_held: dict[str, float] = {}
        self.failovers = 0
        self.last_failover_s = 0.0
        # durations of the failovers / switchovers this proxy led (shared by a cluster's shard controllers)
        self.failover_seconds = shared_with.failover_seconds if shared_with else Histogram(FAILOVER_BUCKETS)
        self.switchover_seconds = shared_with.switchover_seconds if shared_with else Histogram(SWITCHOVER_BUCKETS)
        self.raft_events = RaftEvents(self.cfg.node)
        self.phase = "idle"
        self._down_since: float | None = None
        self._fence: tuple[int, int] = (-1, 0)  # (topology epoch, Raft index to fence on)
        self.phase_reason = ""       # why the phase is what it is (no_safe_master, no_candidate)
        self._history_at = 0.0
        self._history_seen: tuple | None = None     # (master, history) of the topology last stepped on
        self._history_seen_at = 0.0                 # when this proxy first stepped on it
        self._paused_old: str | None = None     # an old master left paused: its demotion failed
        self._tasks: set[asyncio.Task] = set()  # background proposals (failover records)
        self._waiter = RoundWaiter(getattr(server, "health", None), server)

    def timings_changed(self) -> None:
        """(Re)compute what follows from probe_interval_ms and down_after_ms (the dynamic
        configuration may change them while running)."""
        self.probe_interval = self.cfg.probe_interval_ms / 1000.0
        # The steps (views, reports, decisions) run at least every DECISION_INTERVAL_S, however
        # slowly the nodes are probed: a node is down `down_after_ms` after its last valid
        # reply, judged at the next step, so probing less often (fewer round trips for an idle
        # proxy and for Redis, issue 16) does not find a dead master later.
        self.interval = min(self.probe_interval, DECISION_INTERVAL_S)
        self.freshness = max(3 * self.probe_interval, self.cfg.down_after_ms / 1000.0)
        # a candidate's freshest observation may be at most this old (older offsets are old news)
        self.candidate_age_s = max(3 * self.probe_interval, 0.3)
        # a follower's unchanged view is sent again this often (a changed one at once):
        # well within `freshness`, so the leader never sees it go stale
        self.report_refresh_s = max(self.interval, 0.4 * self.freshness)
        for c in getattr(self, "per_shard", {}).values():
            c.timings_changed()

    @property
    def tags(self) -> dict:
        """The operator's node tags (dynamic configuration)."""
        live = getattr(self.server, "live_config", None)
        return live.tags if live is not None else {}

    @property
    def topology(self) -> Topology | None:
        """This controller's shard's committed topology."""
        return self.sm.shards.get(self.shard)

    # -- views --------------------------------------------------------------
    def local_view(self) -> dict[str, NodeView]:
        health = self.server.health
        now = time.monotonic()
        out = {}
        for addr, st in health.nodes.items():
            out[addr] = NodeView(st.up(now, health.down_after), st.role, st.offset, st.link_up,
                                 st.link_down_since_s, st.master_addr, st.replid, st.replid2, st.offset2,
                                 st.priority, round(now - st.last_ok, 4) if st.ever_ok else UNKNOWN_AGE_S,
                                 st.run_id)
        return out

    def step_soon(self) -> None:
        """Run the next step now rather than at the next point of the grid."""
        self._waiter.wake()

    def _leader_state(self) -> LeaderState:
        c = self.consensus
        log_ = getattr(getattr(c, "core", None), "log", None)
        commit_term = log_.term_at(c.commit_index) if log_ is not None else None
        topo = self.topology
        return LeaderState(c.role, c.term, c.commit_index, c.applied_index, commit_term, bool(c.lease_held()),
                           topo.epoch if topo is not None else None)

    def refusal(self, term: int, epoch: int | None) -> str | None:
        """Why this proxy must not act now for (`term`, `epoch`) (see decide.refuse_to_act)."""
        return refuse_to_act(self._leader_state(), term=term, epoch=epoch)

    # -- the loop -------------------------------------------------------------
    async def run(self) -> None:
        self._http = http_session(max(0.2, self.interval * 2), self.server.tls.admin_client)
        # A step runs as soon as a round of probes has its replies (in the wake-up that read
        # them: no wake-up of its own, issue 16), or a follower's report says a node changed
        # (the leader), else half an interval after probes were sent, at least half an
        # interval after the last step (`next_step_deadline`).
        try:
            with self._waiter:
                while True:
                    raise_if_cancelled()
                    try:
                        await self._step()
                    except Exception:  # the control loop must survive anything
                        self.log.exception("controller step failed")
                    await self._waiter.wait(self.interval)
        finally:
            await self._http.close()
            for c in self._clients.values():
                await c.aclose()

    def _observe(self) -> dict[str, NodeView] | None:
        """Raft metrics and events, and this proxy's view of the nodes: sent to the leader
        (None), or kept with the others' when this proxy leads (the view)."""
        self.server.stats.observe_raft(self.consensus)
        self.raft_events.observe(self.consensus)
        tune = getattr(self.server, "tune_probes", None)
        if tune is not None:
            tune()
        view = self.local_view()
        if self.consensus.role != "leader":
            self.views.clear()
            key, now = report_key(view, self.consensus.leader_id), time.monotonic()
            learner = getattr(self.consensus, "is_learner", False)     # a learner's view is not counted
            if not learner and report_due(key, self._report_key, now - self._report_at, self.report_refresh_s):
                self._report_key, self._report_at = key, now
                self._report(view)
            return None
        self._report_key = None
        self.views[self.cfg.node] = (time.monotonic(), view)
        self._own_sent.update((a, st.sent_ok) for a, st in self.server.health.nodes.items())
        return view

    def _probed_since_history(self, topo: Topology) -> bool:
        """Was this proxy's own view of the master probed after the proxy first stepped on
        `topo.history`? The record may come from a newer view than that: another proxy's
        (a failover records the freshest view of the new master) or an earlier leader's.
        Under writes, an older probe's reply shows a lower offset though the node lost
        nothing, so only a view probed since may say the master lost the committed history
        (the record was taken before it was committed, so before this proxy applied it)."""
        key = (topo.master, topo.history)
        if key != self._history_seen:
            self._history_seen, self._history_seen_at = key, time.monotonic()
        return self._own_sent.get(topo.master or "", 0.0) > self._history_seen_at

    async def _step(self) -> None:
        view = self._observe()
        if view is None:
            return
        term, topo = self.consensus.term, self.topology
        # a new leader decides nothing before it applied all that is committed, its own
        # no-op included: until then its topology may be an epoch behind
        if self.refusal(term, topo.epoch if topo is not None else None) is not None:
            return
        if topo is None:
            await self._propose_initial()
            return
        await self._maybe_end_pause()
        await self._maybe_fail_over(topo)
        await self._reconcile(self.topology, view, term)

    async def _propose_initial(self) -> None:
        if self._proposing:
            return
        topo = Topology.initial(list(self.cfg.redis_nodes), self.cfg.initial_master)
        await self._propose(topo, "initial topology from configuration")

    async def _propose(self, topo: Topology, reason: str, timeout: float = 2.0) -> bool:
        self._proposing = True
        try:
            await self.consensus.propose(TopologyStateMachine.entry(topo, reason, self.shard), timeout=timeout)
            return True
        except Exception as exc:
            self.log.warning("event=propose_failed epoch=%d reason=%r error=%r", topo.epoch, reason, exc)
            return False
        finally:
            self._proposing = False

    async def _maybe_fail_over(self, topo: Topology) -> None:
        if topo.master is None or self._proposing:
            return
        views = self.fresh_views()
        mview = views.get(self.cfg.node, {}).get(topo.master)
        paused = self.sm.pause
        probed = self._probed_since_history(topo)
        if self.phase != "switchover" and not (topo.writes_paused and not topo.hold_reason) \
                and master_lost_history(mview, topo.history) and probed:
            if paused is not None:
                self._suppressed(topo, paused, "restarted without its data")
                return
            await self._master_lost_history(topo, views)
            return
        quorum = len(self.consensus.members) // 2 + 1
        if not objectively_down(topo.master, views, quorum):
            self._down_since = None
            if self.phase in ("objectively_down", "never_seen", "paused"):
                self.phase, self.phase_reason = "idle", ""
            if self.phase != "switchover":
                await self._record_history(topo, mview)
            return
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self.phase = "objectively_down"
            self.log.warning("event=objectively_down master=%s epoch=%d votes=%d quorum=%d", topo.master,
                        topo.epoch, sum(1 for v in views.values() if topo.master in v and not v[topo.master].up),
                        quorum)
        if paused is not None:
            self._suppressed(topo, paused, "objectively down")
            return
        if never_seen(topo.history):
            if self.phase != "never_seen":
                self.log.error("event=failover_blocked master=%s epoch=%d reason='the master was never seen up: "
                          "nothing is known of what it holds'", topo.master, topo.epoch)
            self.phase = "never_seen"
            self.phase_reason = (f"master {topo.master} is down and was never seen up, so nothing is known of what "
                                 f"it holds; no replica is promoted over it. To promote one anyway: "
                                 f"redis-raft-proxy failover --to <node>")
            return
        st = self.server.health.nodes.get(topo.master)
        grace = busy_kill_grace_s(self.probe_interval, self.cfg.down_after_ms / 1000)
        # Busy: answering -BUSY now, or lately (another proxy's SCRIPT KILL may just have
        # ended it, and the views that found the master down predate that).
        busy = st is not None and st.busy_at is not None and now - st.busy_at < self.cfg.down_after_ms / 1000 + grace
        cause = BUSY if busy else down_cause(st.error if st else None)
        if cause == BUSY and (busy_master_left_alone(now, self._down_since, st.killed_at, grace)
                              or await self._killed_before_failover(topo.master)):
            # every proxy that finds it down and busy sends SCRIPT KILL (or FUNCTION KILL), as
            # Sentinel does: give a read-only script's kill time to show before failing over,
            # and leave alone a master whose scripts keep being killed (a client re-running one)
            self.phase = "busy"
            return
        down_for = self.cfg.down_after_ms / 1000.0 + (now - self._down_since)
        new = self._candidate(topo, views, down_for)
        if new is None:
            if self.phase != "no_candidate":
                self.log.error("event=failover_blocked master=%s epoch=%d reason='no replica is safe to promote'",
                          topo.master, topo.epoch)
            self.phase = "no_candidate"
            self.phase_reason = f"master {topo.master} is down and no replica is safe to promote"
            return
        # duration: from objective down to committed (the wait for a safe candidate included)
        # writes wait from the master's last valid reply (as this leader saw it)
        held_since = min(self._down_since, st.last_ok) if st is not None and st.ever_ok else self._down_since
        if await self._fail_over(topo, new, f"failover: {topo.master} objectively down"
                                 + (" (busy)" if cause == BUSY else ""), self._down_since, views,
                                 cause=cause, held_since=held_since):
            self._down_since = None

    async def _killed_before_failover(self, master: str) -> bool:
        """This leader's own kill ended a script of the busy `master` (or found none
        running) just now (`Prober.kill_busy_script`). The other proxies' kills may have
        ended every run of a script a client keeps running again, while this proxy, having
        seen a valid reply in between, sent none: its own `killed_at` alone would fail over
        a master whose scripts all end."""
        prober = getattr(self.server, "probers", {}).get(master)
        return prober is not None and await prober.kill_busy_script()

    def _suppressed(self, topo: Topology, pause: Pause, what: str) -> None:
        """Maintenance mode: the master needs a failover, which is not done."""
        if self.phase != "paused":
            self.log.error("event=failover_suppressed master=%s epoch=%d state=%r pause_reason=%r paused_by=%r",
                           topo.master, topo.epoch, what, pause.reason, pause.by)
        self.phase = "paused"
        why = pause.reason or "no reason given"
        self.phase_reason = (f"master {topo.master} is {what}, but automatic failover is paused ({why}); "
                             "redis-raft-proxy resume, or failover --to <node>")

    # -- maintenance mode -------------------------------------------------------------
    async def _maybe_end_pause(self) -> None:
        """The leader ends a pause whose expiry passed (by its own clock)."""
        pause = self.sm.pause
        if pause_expired(pause, time.time()) and not self._proposing:
            self.log.warning("event=failover_pause_expired until=%.3f paused_by=%r", pause.until, pause.by)
            await self._propose_entry(TopologyStateMachine.pause_entry(None), "pause expired")

    async def _propose_entry(self, data: bytes, what: str) -> bool:
        try:
            await self.consensus.propose(data, timeout=2.0)
            return True
        except Exception as exc:
            self.log.warning("event=propose_failed reason=%r error=%r", what, exc)
            return False

    async def pause(self, reason: str, expires_s: float | None, by: str) -> dict:
        """Maintenance mode on (for every shard): no automatic failover until `resume`
        or until `expires_s` seconds from now (by the leader's clock)."""
        if self.consensus.role != "leader":
            raise NotLeaderError(self.consensus.leader_id)
        now = time.time()
        pause = Pause(reason, pause_until(now, expires_s), by or self.cfg.node, now)
        if not await self._propose_entry(TopologyStateMachine.pause_entry(pause), "pause"):
            raise RuntimeError("could not commit the pause")
        return {"ok": True, "message": "automatic failover paused" + (f" until {_iso(pause.until)}"
                                                                     if pause.until else ""),
                "paused": pause.to_dict()}

    async def resume(self, by: str) -> dict:
        if self.consensus.role != "leader":
            raise NotLeaderError(self.consensus.leader_id)
        if self.sm.pause is None:
            return {"ok": True, "message": "automatic failover was not paused"}
        if not await self._propose_entry(TopologyStateMachine.pause_entry(None), "resume"):
            raise RuntimeError("could not commit the resume")
        self.log.warning("event=failover_resume_requested by=%r", by)
        return {"ok": True, "message": "automatic failover resumed"}

    def _record(self, old: str | None, topo: Topology, cause: str, held_s: float | None, detail: str) -> None:
        """Commit a record of the change of master `topo` for `history` (in the background:
        the reconciler must not wait for it)."""
        rec = FailoverRecord(topo.epoch, time.time(), old, topo.master or "", cause,
                             None if held_s is None else round(max(0.0, held_s) * 1000), self.cfg.node,
                             self.shard, detail)
        self._background(self._propose_entry(TopologyStateMachine.record_entry(rec), "failover record"))

    def _background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _candidate(self, topo: Topology, views: dict[str, dict[str, NodeView]], down_for: float) -> str | None:
        return choose_new_master(topo.master, topo.replicas, views, leader=self.cfg.node, history=topo.history,
                                 max_age_s=self.candidate_age_s,
                                 max_staleness_s=self.cfg.max_replica_staleness_ms / 1000.0, down_for_s=down_for,
                                 tags=self.tags)

    async def _record_history(self, topo: Topology, mview: NodeView | None) -> None:
        """Commit how far the master's history has grown (at most every HISTORY_INTERVAL_S,
        at once when its replication id changed, as after a promotion)."""
        h = next_history(mview, topo.history)
        if h is None:
            return
        now = time.monotonic()
        if not history_due(h, topo.history, now - self._history_at, HISTORY_INTERVAL_S):
            return
        self._history_at = now
        self._proposing = True
        try:
            await self.consensus.propose(TopologyStateMachine.history_entry(topo, h, self.shard), timeout=2.0)
        except Exception as exc:
            self.log.warning("event=propose_failed epoch=%d reason='master history' error=%r", topo.epoch, exc)
        finally:
            self._proposing = False

    async def _master_lost_history(self, topo: Topology, views: dict[str, dict[str, NodeView]]) -> None:
        """The master answers without the committed history (restarted without its data,
        perhaps as a replica of some node): it must not be made master nor given replicas.
        Fail over to a replica that still has the history, before it resynchronises from
        the empty node; with none, hold writes and say so. The leader's own probe of the
        master decides: a node's replication history is a fact, not a matter of
        reachability, so no quorum of views is needed."""
        own = views[self.cfg.node]
        m, h = own[topo.master], topo.history
        keeper = self._candidate(topo, views, 0.0)
        through = ""
        if keeper is None:      # a deposed master holding the history its successor started from?
            keeper = parent_keeper(topo.master, topo.nodes, own, h, max_age_s=self.candidate_age_s, tags=self.tags)
            through = f" through_parent={h.parent}" if keeper is not None and h is not None else ""
        if keeper is not None:
            k = freshest(keeper, views)
            self.log.error("event=master_restarted_empty master=%s offset=%d replid=%s replica=%s replica_offset=%d "
                      "epoch=%d%s", topo.master, m.offset, m.replid, keeper, k.offset if k else -1, topo.epoch, through)
            now = time.monotonic()
            await self._fail_over(topo, keeper, f"failover: {topo.master} restarted without its data "
                                                f"(offset {m.offset}, {keeper} has {k.offset if k else '?'})",
                                  now, views, cause=RESTARTED_EMPTY, held_since=now)
            return
        reason = (f"no_safe_master: {topo.master} lost the committed data (it has replid {m.replid} offset "
                  f"{m.offset}, the committed history is replid {h.replid} offset {h.offset}) and no replica "
                  f"holds it; writes are held. To accept the loss: redis-raft-proxy failover --to <node>")
        if self.phase != "no_safe_master":
            self.log.error("event=no_safe_master master=%s epoch=%d role=%s replid=%s offset=%d history_replid=%s "
                      "history_offset=%d", topo.master, topo.epoch, m.role, m.replid, m.offset, h.replid, h.offset)
        self.phase, self.phase_reason = "no_safe_master", reason
        if not topo.writes_paused:
            await self._propose(topo.paused(reason), reason)

    async def _fail_over(self, topo: Topology, new: str, reason: str, since: float,
                         views: dict[str, dict[str, NodeView]], *, cause: str, held_since: float) -> bool:
        """Commit `topo` with `new` as master; the reconciler then changes the roles.
        The new topology records what `new` was seen to hold: the reconciler promotes
        it only while it still holds that."""
        seen = freshest(new, views)
        nxt = topo.with_master(new, History(seen.replid, seen.offset) if seen and seen.replid else None)
        self.phase = "proposing"
        started = time.monotonic()
        self.log.warning("event=failover_started old_master=%s new_master=%s epoch=%d", topo.master, new, nxt.epoch)
        if not await self._propose(nxt, reason):
            return False
        done = time.monotonic()
        for c in (self, self.parent):
            if c is not None:
                c.failovers += 1
                c.last_failover_s = done - since
        self.failover_seconds.observe(done - since)
        self.phase, self.phase_reason = "reconciling", ""
        self.log.warning("event=failover_committed new_master=%s epoch=%d duration_ms=%.0f commit_ms=%.0f", new,
                    nxt.epoch, self.last_failover_s * 1000, (done - started) * 1000)
        self._record(topo.master, nxt, cause, done - held_since, reason)
        return True

    async def _reconcile(self, topo: Topology, view: dict[str, NodeView], term: int,
                         paused_master: bool = False) -> None:
        """Bring Redis roles in line with `topo`, decided as leader of `term`. Not
        before every proxy that may still route writes has applied `topo` (Raft's
        writes_fenced): a proxy a heartbeat behind would otherwise write to the old
        master after the new one was promoted, and lose those writes when the old
        one is demoted. `paused_master`: the switchover's CLIENT PAUSE WRITE holds
        such writes. After that wait, and before every Redis command, the leader
        checks that it still leads in `term` with a lease, has applied all it
        committed and that `topo` is still the latest (docs/design.md rule 2): a leader
        deposed, or a topology replaced, during a wait must not act on it."""
        held = bool(topo.writes_paused and topo.hold_reason)     # no_safe_master committed
        if self._sync_held:
            await self._release_syncs(topo, held)
        if master_lost_history(view.get(topo.master), topo.history) and not self._probed_since_history(topo):
            return      # a view older than the record (see _probed_since_history): the next round decides
        cluster = self.shard != SINGLE
        actions = reconcile(topo.master, topo.nodes, view, topo.history, writes_held=held, cluster=cluster)
        if actions and actions[0].hold_syncs:     # (the only action then)
            await self._hold_syncs(topo.master, term, topo.epoch)
            actions = []
        if not actions:
            if self.phase == "reconciling":
                self.phase = "idle"
                self.log.info("event=failover_finished epoch=%d master=%s", topo.epoch, topo.master)
            return
        if not paused_master:
            if not await self._wait_fenced(topo):
                return
            # the wait may have been long: decide again on what the probes show now
            actions = [a for a in reconcile(topo.master, topo.nodes, self.local_view(), topo.history,
                                            writes_held=held, cluster=cluster) if not a.hold_syncs]
        now = time.monotonic()
        for action in actions:
            key = (action.node, topo.epoch, action.replicaof or "")
            last = self._acted.get(key)
            if last is not None and now - last < max(0.5, 5 * self.probe_interval):
                continue  # give the last command time to show in the probes
            why = self.refusal(term, topo.epoch)
            if why is not None:
                self.log.warning("event=reconcile_stopped epoch=%d term=%d node=%s reason=%r", topo.epoch, term,
                            action.node, why)
                return
            self._acted[key] = now
            await self._run_action(action, topo.epoch)

    async def _hold_syncs(self, master: str, term: int, epoch: int) -> None:
        """Hold the full syncs emptied `master` would serve its replicas (`sync_hold`);
        checked again at most once a second (the node may restart and forget it), or every
        SYNC_HOLD_RETRY_S while it cannot be held."""
        now = time.monotonic()
        if now - self._sync_held.get(master, 0.0) < 1.0:
            return
        why = self.refusal(term, epoch)
        if why is not None:
            self.log.warning("event=reconcile_stopped epoch=%d term=%d node=%s reason=%r", epoch, term, master, why)
            return
        self._sync_held[master] = now
        try:
            if not await hold_full_syncs(self._client(master).execute_command, master, self.log):
                self._sync_held[master] = now + SYNC_HOLD_RETRY_S      # (its log said why)
        except (TimeoutError, RedisError, OSError, ValueError) as exc:
            self._sync_held[master] = now + SYNC_HOLD_RETRY_S
            self.log.error("event=sync_hold_failed node=%s epoch=%d error=%r reason='its replicas resynchronise "
                           "from it after repl-diskless-sync-delay (the control user needs +config|set); run "
                           "redis-raft-proxy failover --to <node> promptly'", master, epoch, exc)

    async def _release_syncs(self, topo: Topology, held: bool) -> None:
        """Give back their own sync delay to the masters this leader held, once writes are no
        longer held for the operator with that node as master."""
        for addr in list(self._sync_held):
            if held and addr == topo.master:
                continue
            try:
                await release_full_syncs(self._client(addr).execute_command, addr, self.log)
            except (TimeoutError, RedisError, OSError, ValueError) as exc:
                self.log.warning("event=sync_release_failed node=%s error=%r", addr, exc)
                continue        # tried again next round (and by the periodic node check)
            del self._sync_held[addr]

    async def _wait_fenced(self, topo: Topology) -> bool:
        """Poll Raft's writes_fenced for `topo` (normally one round trip) for at most
        the longest a lease can outlive its last renewal; False if still not."""
        if self._fence[0] != topo.epoch:
            self._fence = (topo.epoch, self.consensus.applied_index)  # at or after the entry of `topo`
        deadline = time.monotonic() + self.consensus.fence_timeout_s + 0.1
        while not self.consensus.writes_fenced(self._fence[1]):
            current = self.topology
            if time.monotonic() > deadline or self.consensus.role != "leader" or current is None \
                    or current.epoch != topo.epoch:
                return False
            await asyncio.sleep(0.01)
        return True

    def peer_url(self, node: str | None) -> str | None:
        """A proxy's admin URL: from the Raft membership, else from config."""
        if node is None:
            return None
        core = getattr(self.consensus, "core", None)
        members = getattr(core, "members", None) or {}
        learners = getattr(core, "learners", None) or {}
        return members.get(node) or learners.get(node) or self.consensus.peers.get(node)

    def _client(self, addr: str) -> aioredis.Redis:
        c = self._clients.get(addr)
        if c is None:
            c = self._clients[addr] = control_client(addr, username=self.cfg.control_username,
                                                     password=self.cfg.control_password,
                                                     timeout=self.cfg.down_after_ms / 1000.0,
                                                     tls=control_tls(self.cfg))
        return c

    async def _command(self, addr: str, *args):
        return await self._client(addr).execute_command(*args)

    def _cluster_peers(self, node: str) -> list[str]:
        """Every other node of the cluster as committed: `node`'s own shard first."""
        own = self.topology.nodes if self.topology else ()
        rest = [n for t in self.sm.cluster_shards.values() for n in t.nodes]
        return list(dict.fromkeys(n for n in (*own, *rest) if n != node))

    async def _run_action(self, action, epoch: int) -> None:
        client = self._client(action.node)
        try:
            if action.replicaof is None:
                detach = action.reason.startswith("detach")     # (single set only: see decide.reconcile)
                if self.shard == SINGLE:
                    await client.execute_command("REPLICAOF", "NO", "ONE")
                else:
                    # the replica takes its master's slots with a new config epoch, without the
                    # master's agreement (it may be dead); the cluster bus tells every other node
                    await client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
                    self._background(make_takeover_win(self._command, action.node, self._cluster_peers(action.node),
                                                       self.log))
                if detach:
                    self.log.warning("event=node_detached node=%s epoch=%d reason=%r",
                                     action.node, epoch, action.reason)
                else:
                    self.log.warning("event=node_promoted node=%s epoch=%d reason=%r",
                                     action.node, epoch, action.reason)
            else:
                host, _, port = action.replicaof.rpartition(":")
                paused = action.node == self._paused_old
                if paused:      # a switchover's old master: keep it paused while it is a master
                    await client.execute_command("CLIENT", "PAUSE", max(2000, int(self.cfg.hold_ms)), "WRITE")
                if self.shard == SINGLE:
                    await client.execute_command("REPLICAOF", host, port)
                else:
                    master_id = await self._client(action.replicaof).execute_command("CLUSTER", "MYID")
                    await client.execute_command("CLUSTER", "REPLICATE", master_id)
                self.log.warning("event=node_demoted node=%s replicaof=%s epoch=%d reason=%r", action.node,
                            action.replicaof, epoch, action.reason)
                if paused:
                    self._paused_old = None
                    await self._unpause(client)
        except (TimeoutError, RedisError, OSError) as exc:
            self.log.warning("event=reconcile_failed node=%s epoch=%d error=%r", action.node, epoch, exc)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
