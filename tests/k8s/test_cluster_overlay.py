"""k8s/overlays/cluster (cluster mode): the Redis pods run cluster-enabled with
what the proxies require, the proxies seed every Redis pod, and the Job
redis-cluster-create runs `redis-raft-proxy create-cluster` over exactly those
pods with the Redis password from the Secret. (The checks every overlay gets,
schema validation included, are in test_manifests.py.)"""

from __future__ import annotations

import pytest

from proxy.process.cli import build_parser
from proxy.process.cluster_create import CLUSTER_SERVER_ARGS, ClusterCreator

from .kube import container, container_env, container_port, full_command, pod_spec, pod_spec_labels, render
from .test_manifests import _assert_only_the_pod_user_reads, _config, _redis_confs, _redis_directives

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
