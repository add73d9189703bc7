"""The cluster id: which Raft cluster a data dir and a peer's messages belong to.

Why: a proxy whose data dir was lost starts as if new. If it (or two of them)
then formed a new cluster with an empty log, the old and the new cluster would
each decide topologies, and once they meet Raft would overwrite one with the
other. With an id, such messages are refused, and a node with an empty data dir
does not bootstrap while any peer can tell it that it was a member before.

* The id is a random 128-bit hex string. It is chosen by the first leader of a
  cluster (or, on a cluster from a version before ids, by the first leader that
  has this code), which writes it into its NOOP entry; a node knows the id once
  that entry is committed and applied (or once a peer that knows it sends it).
  So all nodes agree on it without any extra round.
* ``seeded`` is the set of nodes known to have had the id: the ones whose
  messages carried it. Every message carries the sender's id and seeded set
  (HTTP headers); receivers with the same id merge the set. Both are persisted
  in ``cluster.json`` in the data dir.
* A node with an empty data dir, started without ``--join``, asks every peer for
  its id and seeded set before it takes part (:func:`bootstrap_verdict`): if a
  peer's cluster lists it as seeded, it was a member and lost its data, and it
  refuses to start; it waits until every peer has answered, so that two
  wiped nodes cannot form a new cluster while the one that remembers is down.
* Messages whose id differs from ours are refused (:func:`peer_problem`).
  Rolling upgrades: a peer that sends no id at all (a version before ids) is
  accepted, and one that has no GET /raft/cluster (404) counts as an answer
  without an id; neither can be checked, which is how it was before. A cluster
  of the version before gets its id from its first leader of this version.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

ID_HEADER = "X-Raft-Cluster"
SEEDED_HEADER = "X-Raft-Seeded"
INFO_PATH = "/raft/cluster"


class ClusterMismatch(Exception):
    """This node must not take part: its data dir belongs elsewhere or was lost."""


@dataclass(frozen=True, slots=True)
class ClusterMeta:
    cluster_id: str = ""  # "": not known yet (empty data dir, or a cluster from before ids)
    seeded: frozenset[str] = field(default_factory=frozenset)

    def to_dict(self) -> dict[str, object]:
        return {"cluster_id": self.cluster_id, "seeded": sorted(self.seeded)}

    @staticmethod
    def from_dict(d: object) -> ClusterMeta:
        """Raises ValueError on anything that is not a cluster meta document."""
        if not isinstance(d, dict):
            raise ValueError("cluster meta must be an object")
        cid, seeded = d.get("cluster_id", ""), d.get("seeded", [])
        if not isinstance(cid, str) or not isinstance(seeded, list) or not all(isinstance(s, str) for s in seeded):
            raise ValueError(f"bad cluster meta {d!r}")
        return ClusterMeta(cid, frozenset(seeded))

    def headers(self) -> dict[str, str]:
        if not self.cluster_id:
            return {}
        return {ID_HEADER: self.cluster_id, SEEDED_HEADER: ",".join(sorted(self.seeded))}

    @staticmethod
    def from_headers(headers: Mapping[str, str]) -> ClusterMeta | None:
        """None when the sender sent no id (empty data dir, or a version before ids)."""
        cid = headers.get(ID_HEADER, "")
        if not cid:
            return None
        return ClusterMeta(cid, frozenset(s for s in headers.get(SEEDED_HEADER, "").split(",") if s))


def new_cluster_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def peer_problem(mine: ClusterMeta, peer: ClusterMeta | None, src: str) -> str | None:
    """Why a message from ``src`` must be refused, or None to accept it."""
    if peer is None or not mine.cluster_id or peer.cluster_id == mine.cluster_id:
        return None
    return (f"message from {src} refused: it belongs to raft cluster {peer.cluster_id}, "
            f"this node to cluster {mine.cluster_id}")


def bootstrap_verdict(
    node_id: str, answers: Mapping[str, ClusterMeta | None], peers: list[str],
    reasons: Mapping[str, str] | None = None,
) -> tuple[str, str] | None:
    """For a node with an empty data dir started without --join.

    ``answers`` holds what each peer said (an unreachable one is absent). Returns
    ("refuse", why) when a peer's cluster counts this node as a member that had
    its data, ("wait", why) while some peer has not answered (naming why, from
    ``reasons``: peer -> the error that kept it from answering), None when the node
    may take part (every peer is new too, or a cluster formed by the others never
    saw this node: it is a bootstrap member that started late)."""
    for peer, meta in sorted(answers.items()):
        if meta is not None and node_id in meta.seeded:
            return "refuse", (
                f"{peer} says this node ({node_id}) was a member of raft cluster {meta.cluster_id}, but this "
                f"data dir is empty (lost or replaced). Not starting a new cluster: start this proxy with "
                f"--join <admin URL of a running proxy> to rejoin with an empty data dir")
    missing = [p for p in peers if p != node_id and p not in answers]
    if missing:
        reasons = reasons or {}
        named = ", ".join(f"{p} ({reasons[p]})" if reasons.get(p) else p for p in missing)
        return "wait", (
            f"empty data dir: not bootstrapping a raft cluster until every peer has answered (no answer yet "
            f"from {named}); if this proxy was a member before, start it with --join instead")
    return None
