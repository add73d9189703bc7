"""/readyz (proxy.process.admin.not_ready): when a proxy should get no clients. A CI run
caught the leader's /readyz at 503 "no lease" a moment after it had answered 200: the lease
lapses at every commit until the entry is applied, which is not a reason
to take the proxy out of a Kubernetes Service."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from proxy.process.admin import not_ready


def server(master: str | None = "10.0.0.1:6379", held: bool = True, waits_for_apply: bool = False,
           stale_reads: bool = False, cluster=None) -> SimpleNamespace:
    return SimpleNamespace(cluster=cluster, router=SimpleNamespace(topology=SimpleNamespace(master=master)),
                           consensus=SimpleNamespace(lease_held=lambda: held,
                                                     lease_waits_for_apply=lambda: waits_for_apply),
                           cfg=SimpleNamespace(stale_reads_when_partitioned=stale_reads))


@pytest.mark.parametrize(("kw", "why"), [
    ({}, None),
    ({"held": False, "waits_for_apply": True}, None),       # the lapse of a commit being applied
    ({"held": False}, "no lease from a quorum"),
    ({"held": False, "stale_reads": True}, None),           # serves reads without a lease, by choice
    ({"master": None}, "no committed topology"),
    ({"cluster": SimpleNamespace(routers={})}, "no committed topology"),
    ({"cluster": SimpleNamespace(routers={"s1": object()}), "held": False}, "no lease from a quorum"),
])
def test_why_a_proxy_is_not_ready(kw, why) -> None:
    assert not_ready(server(**kw)) == why
