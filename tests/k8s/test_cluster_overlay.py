"""k8s/overlays/cluster (cluster mode): the Redis pods run cluster-enabled with
what the proxies require, the proxies seed every Redis pod, and the Job
redis-cluster-create runs `redis-raft-proxy create-cluster` over exactly those
pods with the Redis password from the Secret. (The checks every overlay gets,
schema validation included, are in test_manifests.py.) Run as local processes
(kube.LocalPods) the overlay forms a cluster and serves every shard."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from proxy.process.cli import build_parser
from proxy.process.cluster_create import (
    CLUSTER_SERVER_ARGS,
    ClusterCreator,
    even_ranges,
)
from proxy.routing.cluster_nodes import parse_cluster_nodes
from proxy.routing.keyslot import key_slot

from .kube import (
    HOST,
    REDIS_SERVER,
    VENV_BIN,
    LocalPods,
    Pod,
    container,
    container_env,
    container_port,
    full_command,
    map_mount_paths,
    pod_spec,
    pod_spec_labels,
    pod_volumes,
    render,
    rewrite_redis_conf,
    status,
    wait_until,
)
from .test_manifests import (
    _assert_only_the_pod_user_reads,
    _config,
    _redis_confs,
    _redis_directives,
)

redis = pytest.importorskip("redis")

TARGET = "overlays/cluster"
PROXY, REDIS, JOB = "redis-raft-proxy", "redis", "redis-cluster-create"


def _redis_pods(r) -> list[str]:
    sts = r.get("StatefulSet", REDIS)
    port = container_port(container(sts), "redis")
    return [f"{REDIS}-{i}.{sts['spec']['serviceName']}:{port}" for i in range(sts["spec"]["replicas"])]


def test_redis_pods_are_cluster_enabled_as_the_proxies_require():
    r = render(TARGET)
    sts = r.get("StatefulSet", REDIS)
    assert sts["spec"]["replicas"] == 6, "three shards of a master and a replica"
    d = _redis_directives(r)
    required = dict(zip(CLUSTER_SERVER_ARGS[0::2], CLUSTER_SERVER_ARGS[1::2]))
    for flag, value in required.items():
        assert d.get(flag.lstrip("-")) == value, f"{flag.lstrip('-')}: {d.get(flag.lstrip('-'))!r}, need {value}"
    c = container(sts)
    assert int(d["cluster-port"]) == container_port(c, "cluster-bus"), "the bus port is a declared container port"
    data = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "data")
    assert d["cluster-config-file"].startswith(data.rstrip("/") + "/"), "nodes.conf on the data volume"
    claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
    assert "data" in claims, "a pod keeps its cluster identity (nodes.conf) across rescheduling"
    # the other kustomizations stay single-set
    _, base_confs = _redis_confs(render("base"))
    assert not any("cluster-enabled" in text for text in base_confs.values())


def test_proxies_seed_every_redis_pod():
    r = render(TARGET)
    assert _config(r).cluster_nodes == _redis_pods(r)
    assert not _config(render("base")).cluster_nodes


def _job_argv(r) -> list[str]:
    job = r.get("Job", JOB)
    c = container(job)
    return full_command(c, container_env(r, c, f"{JOB}-x"))


def test_job_creates_the_cluster_over_the_redis_pods():
    r = render(TARGET)
    job = r.get("Job", JOB)
    argv = _job_argv(r)
    assert argv[0] == "redis-raft-proxy"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "create-cluster"
    masters, replicas = args.masters.split(","), args.replicas.split(",")
    pods = _redis_pods(r)
    assert masters + replicas == pods and len(masters) == 3, "redis-0..2 masters, redis-3..5 their replicas"
    ClusterCreator(masters, replicas)     # the product accepts the lists (even split, no duplicates)
    assert args.timeout >= 60, "the Redis pods may start after the Job"
    assert container(job)["image"] == container(r.get("StatefulSet", PROXY))["image"], "the proxy image"
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] >= 3
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False


def test_job_reads_the_redis_password_from_the_secret_file():
    r = render(TARGET)
    job = r.get("Job", JOB)
    c = container(job)
    env = container_env(r, c, f"{JOB}-x")
    path = env["REDIS_RAFT_PROXY_REDIS_PASSWORD_FILE"]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    assert mount.get("readOnly") is True
    vol = next(v for v in pod_spec(job)["volumes"] if v["name"] == mount["name"])
    rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
    (item,) = [i for i in vol["secret"]["items"] if i["path"] == rel]
    # the same Secret and key as the Redis pods' requirepass
    ref = next(e["valueFrom"]["secretKeyRef"] for e in container(r.get("StatefulSet", REDIS))["env"]
               if e["name"] == "REDIS_PASSWORD")
    assert (vol["secret"]["secretName"], item["key"]) == (ref["name"], ref["key"])
    _assert_only_the_pod_user_reads(job, c, vol, item["key"])
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and c["resources"]["limits"]["memory"]
    assert not any("secretKeyRef" in (e.get("valueFrom") or {}) for e in c.get("env", [])), "no secret env value"


def test_job_pods_are_no_proxies():
    """The Job's pods share the name label with the proxies but no Service, budget or
    policy that selects proxies selects them."""
    r = render(TARGET)
    labels = pod_spec_labels(r.get("Job", JOB))
    assert not r.services_selecting(labels)
    for obj in r.all("PodDisruptionBudget") + r.all("NetworkPolicy"):
        sel = (obj["spec"].get("selector") or obj["spec"].get("podSelector"))["matchLabels"]
        assert not all(labels.get(k) == v for k, v in sel.items()), obj["metadata"]["name"]


@pytest.mark.parametrize("port, source", [(16379, "redis"), (6379, "job")])
def test_network_policy_lets_the_bus_and_the_job_in(port, source):
    r = render(TARGET)
    policy = r.get("NetworkPolicy", REDIS)
    src = pod_spec_labels(r.get("StatefulSet", REDIS) if source == "redis" else r.get("Job", JOB))
    allowed = [rule for rule in policy["spec"]["ingress"]
               if any(p["port"] == port for p in rule["ports"])
               and any(all(src.get(k) == v for k, v in f["podSelector"]["matchLabels"].items())
                       for f in rule["from"])]
    assert allowed, f"no ingress rule lets {source} pods reach Redis on {port}"


# -- the rendered overlay run as local processes (kube.LocalPods) -------------

def _run_job(pods: LocalPods, tmp_path: Path) -> subprocess.CompletedProcess:
    """The Job's container as the kubelet runs it: its Secret volume written out, its
    env and command with the Redis pods' DNS names mapped to their local ports."""
    job = pods.r.get("Job", JOB)
    c = container(job)
    mounts = pod_volumes(pods.r, job, tmp_path / JOB)
    env = {k: map_mount_paths(mounts, v) for k, v in container_env(pods.r, c, f"{JOB}-x").items()}
    argv = [map_mount_paths(mounts, pods.map_dns(a)) for a in full_command(c, env)]
    base = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "LC_ALL": "C.UTF-8"}
    try:
        return subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=150, check=False)
    except subprocess.TimeoutExpired as exc:       # what it had done by then, for the failure message
        out, err = (x.decode() if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
        return subprocess.CompletedProcess(argv, -9, out, err + "\n(killed after 150 s)")


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (apt-get install redis-server)")
def test_overlay_runs_a_working_cluster(tmp_path):
    """The six Redis pods with their rendered config, the Job's exact command (twice: the
    second run changes nothing), then the three proxies: every shard served through
    one proxy, MGET across shards, and another proxy reads the writes."""
    r = render(TARGET)
    pods = LocalPods(r, tmp_path, [REDIS, PROXY])
    redis_c = container(r.get("StatefulSet", REDIS))
    port, bus = container_port(redis_c, "redis"), container_port(redis_c, "cluster-bus")
    own_port = rewrite_redis_conf(lambda pod: pod.local(port))

    def rewrite(pod: Pod, key: str, content: str) -> str:      # and its own bus port
        return re.sub(r"(?m)^cluster-port \d+$", f"cluster-port {pod.local(bus)}", own_port(pod, key, content))
    try:
        for pod in pods.pods[REDIS]:
            pods.prepare(pod, rewrite)
            pods.start(pod)
        first = _run_job(pods, tmp_path)
        assert first.returncode == 0, f"{first.stdout}{first.stderr}\n{pods.logs()}"
        password = pods.env(pods.pods[REDIS][0])["REDIS_PASSWORD"]
        assert password not in first.stdout + first.stderr
        again = _run_job(pods, tmp_path)
        assert again.returncode == 0 and not any(w in again.stdout for w in ("ADDSLOTS", "MEET", "REPLICATE")), \
            again.stdout + again.stderr
        clients = [redis.Redis(host=HOST, port=p.local(port), password=password, decode_responses=True,
                               socket_timeout=5) for p in pods.pods[REDIS]]
        me = [next(e for e in parse_cluster_nodes(c.execute_command("CLUSTER", "NODES")) if e.myself)
              for c in clients]
        assert [bool(e.slots) for e in me] == [True] * 3 + [False] * 3, "redis-0..2 own the slots"
        assert [e.master_id for e in me[3:]] == [e.node_id for e in me[:3]], "redis-3..5 replicate redis-0..2"

        proxy_c = container(r.get("StatefulSet", PROXY))
        client_port, admin = container_port(proxy_c, "redis"), container_port(proxy_c, "admin")
        for pod in pods.pods[PROXY]:
            pods.prepare(pod)
            pods.start(pod, {"REDIS_RAFT_PROXY_BIND": HOST, "REDIS_RAFT_PROXY_PORT": str(pod.local(client_port)),
                             "REDIS_RAFT_PROXY_ADMIN_PORT": str(pod.local(admin))})

        def served() -> bool:
            pods.check_alive()
            docs = [status(p, admin) for p in pods.pods[PROXY]]
            return all(d and d.get("mode") == "cluster" and len(d.get("shards") or []) == 3
                       and all(s.get("master") for s in d["shards"]) for d in docs)
        wait_until(served, 90, "every proxy to show three shards with a master", diagnose=pods.logs)
        keys = [f"k8s:{{{tag}}}" for tag in _tags_per_shard(3)]
        c0, c2 = (redis.Redis(host=HOST, port=p.local(client_port), socket_timeout=5, decode_responses=True)
                  for p in (pods.pods[PROXY][0], pods.pods[PROXY][2]))
        for k in keys:
            assert c0.set(k, k) is True and c0.get(k) == k
        assert c0.mget(keys) == keys
        wait_until(lambda: c2.mget(keys) == keys, 10, "another proxy to read the writes", diagnose=pods.logs)
        for k, c in zip(keys, clients[:3]):
            assert c.get(k) == k, f"{k} is not on the master of its shard"
    finally:
        pods.stop_all()


def _tags_per_shard(shards: int) -> list[str]:
    """A hash tag in each shard's even share of the slots."""
    out: list[str | None] = [None] * shards
    i = 0
    while None in out:
        slot = key_slot(str(i).encode())
        n = next(n for n, (s, e) in enumerate(even_ranges(shards)) if s <= slot <= e)
        out[n] = out[n] or str(i)
        i += 1
    return out
