"""k8s/: every kustomization renders, every object validates offline against a
pinned Kubernetes version, and the manifests agree with the proxy's config
(ports, probe paths, peers, Redis node names, volumes, secrets)."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from proxy.process.config import Config, ConfigError, load_config, parse_addr

from .kube import (
    EXTERNAL_SECRETS,
    K8S_VERSION,
    TLS_SECRET,
    committed_secret_keys,
    container,
    container_env,
    container_port,
    kustomizations,
    kustomize_dir,
    map_mount_paths,
    pod_spec,
    pod_spec_labels,
    pod_volumes,
    render,
    render_committed,
)

TARGETS = kustomizations()
PROXY, REDIS = "redis-raft-proxy", "redis"
CONFIG_ARG = "--config"


def test_every_overlay_is_checked():
    assert TARGETS[0] == "base"
    assert {"overlays/loadbalancer", "overlays/scale-5", "overlays/production", "overlays/tls",
            "overlays/cluster"} <= set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_renders(target):
    r = render(target)
    kinds = {o["kind"] for o in r.objects}
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= kinds
    assert {o["metadata"]["name"] for o in r.all("StatefulSet")} == {PROXY, REDIS}
    # no Namespace baked in: `kubectl apply -n <ns> -k ...` chooses it
    assert not r.all("Namespace")
    assert all("namespace" not in o["metadata"] for o in r.objects)


# -- offline schema validation ------------------------------------------------

def _validator():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate): "
               "schema validation of the rendered manifests skipped")


CRD_GROUPS = ("monitoring.coreos.com/",)   # no schema in kubernetes-validate; checked by hand below


_validated: dict[str, str | None] = {}   # the same object in several overlays is validated once


def _validate(kv, obj: dict) -> str | None:
    key = json.dumps(obj, sort_keys=True)
    if key not in _validated:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kv.validate(obj, K8S_VERSION, strict=True)
            _validated[key] = None
        except kv.ValidationError as exc:
            _validated[key] = f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}"
        except kv.SchemaNotFoundError as exc:
            _validated[key] = f"{where}: {exc.message}"
    return _validated[key]


@pytest.mark.parametrize("target", TARGETS)
def test_objects_validate_against_kubernetes_schema(target):
    kv = _validator()
    errors = [e for obj in render(target).objects
              if not obj["apiVersion"].startswith(CRD_GROUPS) and (e := _validate(kv, obj))]
    assert not errors, f"k8s/{target} against Kubernetes {K8S_VERSION}:\n" + "\n".join(errors)


def test_validation_is_strict():
    """The validator rejects a misspelt field: the check above is not vacuous."""
    kv = _validator()
    sts = render("base").get("StatefulSet", PROXY)
    import copy

    bad = copy.deepcopy(sts)
    container(bad)["readinesProbe"] = container(bad).pop("readinessProbe")
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(sts)
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def test_servicemonitor_scrapes_every_proxy():
    r = render("overlays/production")
    (sm,) = r.all("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    sel = sm["spec"]["selector"]["matchLabels"]
    matching = [s for s in r.all("Service") if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
    assert [s["metadata"]["name"] for s in matching] == [f"{PROXY}-peers"], "exactly the headless peers Service"
    svc = matching[0]
    assert svc["spec"].get("publishNotReadyAddresses") is True, "scrape proxies that are not Ready too"
    ep = sm["spec"]["endpoints"][0]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert ep["path"] == "/metrics"
    sts = r.get("StatefulSet", PROXY)
    port = next(p for p in svc["spec"]["ports"] if p["name"] == ep["port"])
    assert container_port(container(sts), port["targetPort"]) == _config(r).admin_port


# -- proxy StatefulSet --------------------------------------------------------

def _toml_path(r) -> tuple[str, str, str]:
    """(configmap name, key, mountPath) of the --config file of the proxy."""
    sts = r.get("StatefulSet", PROXY)
    c = container(sts)
    words = " ".join(c.get("command", []) + c.get("args", [])).split()
    path = words[words.index(CONFIG_ARG) + 1]
    for m in c["volumeMounts"]:
        if path.startswith(m["mountPath"].rstrip("/") + "/"):
            vol = next(v for v in pod_spec(sts)["volumes"] if v["name"] == m["name"])
            return vol["configMap"]["name"], path[len(m["mountPath"].rstrip("/")) + 1:], m["mountPath"]
    raise AssertionError(f"--config {path} is not on a mounted ConfigMap")


def _pod_env(r, ordinal: int) -> dict[str, str]:
    sts = r.get("StatefulSet", PROXY)
    return container_env(r, container(sts), f"{PROXY}-{ordinal}")


@pytest.fixture(scope="module", autouse=True)
def _volumes_root(tmp_path_factory):
    """Where `_config` writes pods' volumes when its caller gives no directory (pytest
    removes old runs' directories; /tmp keeps no copies of the manifests' secrets)."""
    global _VOLUMES_ROOT
    _VOLUMES_ROOT = tmp_path_factory.mktemp("k8s-volumes")
    yield
    _VOLUMES_ROOT = None


_VOLUMES_ROOT: Path | None = None


def _config(r, ordinal: int = 0, tmp: Path | None = None) -> Config:
    """The config of proxy pod `ordinal` as it loads in the pod: its volumes (ConfigMap,
    Secret files) written under `tmp` (default: a new directory under the module's), the
    env's mount paths mapped there."""
    import tempfile

    _, key, mount = _toml_path(r)
    root = Path(tmp) if tmp is not None else Path(tempfile.mkdtemp(prefix="pod-", dir=_VOLUMES_ROOT))
    mounts = pod_volumes(r, r.get("StatefulSet", PROXY), root / f"{PROXY}-{ordinal}")
    env = {k: map_mount_paths(mounts, v) for k, v in _pod_env(r, ordinal).items() if k.startswith("REDIS_RAFT_PROXY_")}
    return load_config(str(mounts[mount] / key), env=env)


SECRET_FILE_ENV = {"REDIS_RAFT_PROXY_RAFT_SECRET_FILE": "raft-secret",
                   "REDIS_RAFT_PROXY_REDIS_PASSWORD_FILE": "redis-password"}


def _secret_file(r, env_name: str) -> tuple[dict, dict, str]:
    """(volume, volumeMount, key of the Secret) of the file the proxy's env `env_name` names."""
    sts = r.get("StatefulSet", PROXY)
    c = container(sts)
    path = next(e["value"] for e in c["env"] if e["name"] == env_name)
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    vol = next(v for v in pod_spec(sts)["volumes"] if v["name"] == mount["name"])
    rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = (vol.get("secret") or {}).get("items")
    key = next((i["key"] for i in items if i["path"] == rel), None) if items else rel
    return vol, mount, key


@pytest.mark.parametrize("target", TARGETS)
def test_config_toml_loads_with_the_proxy_loader(target, tmp_path):
    r = render(target)
    cm, key, _ = _toml_path(r)
    text = r.configmap(cm)[key]
    tomllib.loads(text)
    sts = r.get("StatefulSet", PROXY)
    replicas = sts["spec"]["replicas"]
    for i in range(replicas):
        cfg = _config(r, i, tmp_path)
        assert cfg.node == f"{PROXY}-{i}"
        secret = _proxy_secret(r)
        assert (cfg.raft_secret, cfg.redis_password) == (secret["raft-secret"], secret["redis-password"]), \
            "the secrets reach the proxy as the mounted Secret's files"
    # the secrets are not in the ConfigMap
    for value in _proxy_secret(r).values():
        assert value not in text


@pytest.mark.parametrize("target", TARGETS)
def test_proxy_secrets_are_read_only_files_the_proxy_user_can_read(target):
    """raft-secret and redis-password are files of a read-only Secret volume, not env
    values (env shows in `kubectl describe pod` and /proc/<pid>/environ); the kubelet
    writes them as root:<fsGroup> with the volume's mode, which must let the pod's
    non-root user (through the group) read them and no one else."""
    r = render(target)
    sts = r.get("StatefulSet", PROXY)
    c = container(sts)
    for e in c["env"]:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        assert not (ref and ref["key"] in SECRET_FILE_ENV.values()), f"{e['name']}: a secret as an env value"
        assert e["name"] not in ("REDIS_RAFT_PROXY_RAFT_SECRET", "REDIS_RAFT_PROXY_REDIS_PASSWORD")
    for env_name, key in SECRET_FILE_ENV.items():
        vol, mount, vol_key = _secret_file(r, env_name)
        assert "secret" in vol and vol_key == key, f"{env_name}: not the Secret's key {key}"
        assert r.get("Secret", vol["secret"]["secretName"]) and mount.get("readOnly") is True
        _assert_only_the_pod_user_reads(sts, c, vol, key)


def _assert_only_the_pod_user_reads(sts: dict, c: dict, vol: dict, key: str) -> None:
    """The kubelet writes a Secret volume's files as root:<fsGroup> (root:root without
    one) with the item's mode or the volume's defaultMode (0644): the container's
    non-root user must read `key` through its groups, and other users not at all."""
    psc, csc = pod_spec(sts)["securityContext"], c.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gids = {csc.get("runAsGroup", psc.get("runAsGroup")), psc.get("fsGroup"), *psc.get("supplementalGroups", [])}
    assert uid not in (None, 0)
    item = next((i for i in vol["secret"].get("items", []) if i["key"] == key), {})
    mode = int(item.get("mode", vol["secret"].get("defaultMode", 0o644)))
    file_gid = psc.get("fsGroup", 0)
    where = f"{sts['metadata']['name']}: volume {vol['name']} key {key}"
    assert mode & 0o040 and file_gid in gids, f"{where}: mode {mode:o}, group {file_gid}: unreadable for " \
        f"uid {uid} groups {gids}"
    assert not mode & 0o007, f"{where}: mode {mode:o} lets any user read it"


@pytest.mark.parametrize("target", TARGETS)
def test_committed_secret_is_a_placeholder_the_proxies_refuse(target, tmp_path):
    """Applied as committed (without an overlay with real secrets) the proxies do not start:
    exit 2 naming the key (the placeholder values are public)."""
    r = render_committed(target)
    committed = _proxy_secret(r)
    assert set(committed_secret_keys()) <= set(committed)
    for i in range(r.get("StatefulSet", PROXY)["spec"]["replicas"]):
        with pytest.raises(ConfigError) as exc:
            _config(r, i, tmp_path)
        assert exc.value.key in ("raft_secret", "redis_password") and "placeholder" in str(exc.value)
    # and the operator's overlay (render) replaces every one of them
    mine = _proxy_secret(render(target))
    assert set(mine) == set(committed_secret_keys())
    assert not set(mine.values()) & set(committed.values())


def _proxy_secret(r) -> dict[str, str]:
    """The Secret the proxy's raft_secret_file is mounted from (its name carries a hash)."""
    vol, _, _ = _secret_file(r, "REDIS_RAFT_PROXY_RAFT_SECRET_FILE")
    return r.secret(vol["secret"]["secretName"])


def _client_port(cfg: Config) -> int:
    """The client port: `port`, or `tls_port` with the plain port off (components/tls)."""
    assert bool(cfg.port) != bool(cfg.tls_port), "one client port: plain text or TLS, not both"
    return cfg.port or cfg.tls_port


@pytest.mark.parametrize("target", TARGETS)
def test_proxy_ports_probes_and_services_agree_with_config(target):
    r = render(target)
    cfg = _config(r)
    sts = r.get("StatefulSet", PROXY)
    c = container(sts)
    # one client port, plain text or (components/tls) TLS only
    assert container_port(c, "redis") == _client_port(cfg) == 6380
    assert container_port(c, "admin") == cfg.admin_port == 8000
    assert cfg.bind == "0.0.0.0", "listen on the pod IP"
    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    scheme = cfg.admin_scheme.upper()
    assert (ready["path"], container_port(c, ready["port"]), ready.get("scheme", "HTTP")) == \
        ("/readyz", cfg.admin_port, scheme)
    assert (live["path"], container_port(c, live["port"]), live.get("scheme", "HTTP")) == \
        ("/healthz", cfg.admin_port, scheme)
    ann = sts["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann.get("prometheus.io/scheme", "http") == cfg.admin_scheme
    assert int(ann["prometheus.io/port"]) == cfg.admin_port and ann["prometheus.io/path"] == "/metrics"

    labels = pod_spec_labels(sts)
    services = {s["metadata"]["name"]: s for s in r.services_selecting(labels)}
    client = services[PROXY]
    assert client["spec"].get("type", "ClusterIP") in ("ClusterIP", "LoadBalancer")
    assert not client["spec"].get("publishNotReadyAddresses"), "clients reach only Ready proxies"
    (cport,) = client["spec"]["ports"]
    assert cport["port"] == 6380 and container_port(c, cport["targetPort"]) == _client_port(cfg)
    peers_svc = services[sts["spec"]["serviceName"]]
    assert peers_svc["spec"]["clusterIP"] == "None"
    assert peers_svc["spec"]["publishNotReadyAddresses"] is True, \
        "a proxy is Ready only after reaching its peers: their names must resolve before"
    assert [container_port(c, p["targetPort"]) for p in peers_svc["spec"]["ports"]] == [cfg.admin_port]


SENTINEL_SERVICE = "redis-raft-proxy-sentinel"


@pytest.mark.parametrize("target", TARGETS)
def test_sentinel_port_is_exposed_where_the_proxies_serve_it(target):
    """The Sentinel-compatible port (docs/sentinel.md): declared on the proxy container as
    `sentinel_port` from the proxy's own config, served by a Service of the Ready proxies
    on Sentinel's port 26379 (port name as Bitnami's chart: tcp-sentinel) and, with the
    NetworkPolicy, open to clients. Cluster mode serves none, and declares none."""
    r = render(target)
    cfg = _config(r)
    c = container(r.get("StatefulSet", PROXY))
    services = {s["metadata"]["name"]: s for s in r.services_selecting(pod_spec_labels(r.get("StatefulSet", PROXY)))}
    declared = [p for p in c["ports"] if p.get("name") == "sentinel" or p["containerPort"] == 26379]
    if cfg.cluster_mode:
        assert not declared and SENTINEL_SERVICE not in services, "cluster mode serves no Sentinel port"
        return
    assert cfg.sentinel_port == 26379 and cfg.master_name == "mymaster"
    assert container_port(c, "sentinel") == cfg.sentinel_port
    svc = services[SENTINEL_SERVICE]
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not svc["spec"].get("publishNotReadyAddresses"), "a proxy without a lease is not Ready: no clients"
    (port,) = svc["spec"]["ports"]
    assert (port["name"], port["port"]) == ("tcp-sentinel", 26379)
    assert container_port(c, port["targetPort"]) == cfg.sentinel_port
    for policy in r.all("NetworkPolicy"):
        if policy["metadata"]["name"] == PROXY_ADMIN_POLICY:
            open_ports = {p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]}
            assert cfg.sentinel_port in open_ports


PROXY_ADMIN_POLICY = "redis-raft-proxy-admin"


@pytest.mark.parametrize("target", TARGETS)
def test_peers_are_the_statefulset_pods(target):
    r = render(target)
    cfg = _config(r)
    sts = r.get("StatefulSet", PROXY)
    headless = sts["spec"]["serviceName"]
    replicas = sts["spec"]["replicas"]
    urls = cfg.peer_urls
    assert list(urls) == [f"{PROXY}-{i}" for i in range(len(urls))], "peers are pods 0..n-1"
    assert len(urls) in (3, 5) and len(urls) <= replicas
    for name, url in urls.items():
        u = urlsplit(url)
        assert (u.scheme, u.hostname, u.port) == (cfg.admin_scheme, f"{name}.{headless}", cfg.admin_port)
    for i in range(replicas):
        # advertise_url of each pod is its own peer URL
        assert _config(r, i).advertise_url == f"{cfg.admin_scheme}://{PROXY}-{i}.{headless}:{cfg.admin_port}"
    if replicas > len(urls):
        # later pods join through a Service of Ready proxies on the admin port
        join = _pod_env(r, replicas - 1)["REDIS_RAFT_PROXY_JOIN"]
        u = urlsplit(join)
        svc = r.get("Service", u.hostname)
        assert svc["spec"]["selector"] == {k: v for k, v in pod_spec_labels(sts).items()
                                           if k in svc["spec"]["selector"]}
        assert not svc["spec"].get("publishNotReadyAddresses")
        port = next(p for p in svc["spec"]["ports"] if p["port"] == u.port)
        assert container_port(container(sts), port["targetPort"]) == cfg.admin_port


@pytest.mark.parametrize("target", TARGETS)
def test_redis_nodes_are_the_redis_pods(target):
    r = render(target)
    cfg = _config(r)
    sts = r.get("StatefulSet", REDIS)
    c = container(sts)
    directives = _redis_directives(r)
    # one port: plain text, or (components/tls) TLS only, which the proxies then speak
    tls = int(directives.get("tls-port", "0"))
    assert bool(tls) != bool(int(directives["port"])), "one Redis port: plain text or TLS, not both"
    port = tls or int(directives["port"])
    assert cfg.tls_upstream == bool(tls)
    if tls:
        assert directives["tls-replication"] == "yes", "replication over TLS too"
    assert container_port(c, "redis") == port
    expected = [f"{REDIS}-{i}.{sts['spec']['serviceName']}:{port}" for i in range(sts["spec"]["replicas"])]
    if cfg.cluster_nodes:    # overlays/cluster: every Redis pod a seed; redis_nodes and master unused
        assert cfg.cluster_nodes == expected
    else:
        assert cfg.redis_nodes == expected
        assert cfg.master == expected[0]
    svc = r.get("Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert [container_port(c, p["targetPort"]) for p in svc["spec"]["ports"]] == [port]
    for host_port in cfg.cluster_nodes or cfg.redis_nodes:
        parse_addr(host_port)


def _redis_confs(r) -> tuple[str, dict[str, str]]:
    """(mountPath, {key: text}) of the Redis ConfigMap volume."""
    sts = r.get("StatefulSet", REDIS)
    vol = next(v for v in pod_spec(sts)["volumes"] if "configMap" in v)
    mount = next(m["mountPath"] for m in container(sts)["volumeMounts"] if m["name"] == vol["name"])
    return mount, r.configmap(vol["configMap"]["name"])


def _redis_directives(r) -> dict[str, str]:
    """The directives of redis.conf and of the files its `include` patterns match in the
    same ConfigMap (in Redis' order: alphabetical, at the include), later ones winning."""
    mount, data = _redis_confs(r)
    out: dict[str, str] = {}
    for line in _lines(data["redis.conf"]):
        word, _, rest = line.partition(" ")
        if word.lower() == "include":
            assert rest.startswith(mount.rstrip("/") + "/"), f"include {rest}: not in the ConfigMap"
            for key in sorted(k for k in data if fnmatch.fnmatch(k, rest[len(mount.rstrip("/")) + 1:])):
                assert key != "redis.conf"
                out.update(_directives(data[key]))
        else:
            out[word.lower()] = rest.strip()
    return out


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _directives(text: str) -> dict[str, str]:
    out = {}
    for line in _lines(text):
        word, _, rest = line.partition(" ")
        out[word.lower()] = rest.strip()
    return out


@pytest.mark.parametrize("target", TARGETS)
def test_redis_config_names_no_master_and_keeps_secrets_out(target):
    r = render(target)
    sts = r.get("StatefulSet", REDIS)
    c = container(sts)
    conf_mount, confs = _redis_confs(r)
    for text in confs.values():
        assert not {"replicaof", "slaveof", "requirepass", "masterauth"} & set(_directives(text)), \
            "roles come from the proxies (REPLICAOF); passwords from the Secret"
    d = _redis_directives(r)
    assert container(sts)["image"].startswith("redis:7"), "stock redis:7 image"
    script = " ".join(c["command"] + c["args"])
    assert "requirepass" in script and "masterauth" in script and "$REDIS_PASSWORD" in script
    data_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "data")
    assert d["dir"] == data_mount
    assert f"{conf_mount}/redis.conf" in script


@pytest.mark.parametrize("target", TARGETS)
def test_data_dir_is_a_persistent_volume(target):
    r = render(target)
    cfg = _config(r)
    sts = r.get("StatefulSet", PROXY)
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container(sts)["volumeMounts"]}
    mount = next(p for p in sorted(mounts, key=len, reverse=True)
                 if cfg.data_dir == p or cfg.data_dir.startswith(p.rstrip("/") + "/"))
    assert mounts[mount] in claims, f"data_dir {cfg.data_dir} must be on a PersistentVolumeClaim"


def test_rollouts_one_proxy_at_a_time_and_redis_by_hand():
    r = render("base")
    assert r.get("StatefulSet", PROXY)["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    # the controller does not know which Redis pod is the master: no automatic restarts
    assert r.get("StatefulSet", REDIS)["spec"]["updateStrategy"]["type"] == "OnDelete"


def test_redis_persistence_component():
    base = render("base").get("StatefulSet", REDIS)
    prod = render("overlays/production").get("StatefulSet", REDIS)
    assert any(v["name"] == "data" and "emptyDir" in v for v in pod_spec(base)["volumes"])
    assert not any(v["name"] == "data" for v in pod_spec(prod)["volumes"])
    assert [t["metadata"]["name"] for t in prod["spec"]["volumeClaimTemplates"]] == ["data"]


@pytest.mark.parametrize("target", TARGETS)
def test_pods_are_hardened_and_budgeted(target):
    r = render(target)
    for name in (PROXY, REDIS):
        sts = r.get("StatefulSet", name)
        spec = pod_spec(sts)
        assert sts["spec"]["podManagementPolicy"] == "Parallel"
        assert spec["enableServiceLinks"] is False, \
            "service links would inject REDIS_RAFT_PROXY_PORT=tcp://... and similar into the proxy's config"
        assert spec["automountServiceAccountToken"] is False
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
        anti = spec["affinity"]["podAntiAffinity"]
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or \
            [t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]]
        assert terms[0]["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"]
            assert c["readinessProbe"] and c["livenessProbe"]
        pdbs = [p for p in r.all("PodDisruptionBudget")
                if p["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]]
        assert len(pdbs) == 1 and pdbs[0]["spec"]["maxUnavailable"] == 1, "one pod at a time keeps the quorum"


@pytest.mark.parametrize("target", TARGETS)
def test_prestop_transfers_leadership(target):
    r = render(target)
    cfg = _config(r)
    c = container(r.get("StatefulSet", PROXY))
    script = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
    command = (f"redis-raft-proxy transfer-leadership --if-leader --endpoint "
               f"{cfg.admin_scheme}://127.0.0.1:{cfg.admin_port}")
    if cfg.tls_admin:
        # the proxy's certificate is checked against the CA the proxy itself uses
        command += f" --cacert {_pod_env(r, 0)['REDIS_RAFT_PROXY_TLS_CA_CERT_FILE']}"
    assert command in script
    grace = pod_spec(r.get("StatefulSet", PROXY))["terminationGracePeriodSeconds"]
    assert grace >= 15


@pytest.mark.parametrize("target", TARGETS)
def test_secret_references_resolve(target):
    r = render(target)
    for sts in r.all("StatefulSet"):
        for c in pod_spec(sts)["containers"]:
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in r.secret(ref["name"]), f"{sts['metadata']['name']}: {e['name']}"
            for v in pod_spec(sts)["volumes"]:
                if "configMap" in v:
                    r.configmap(v["configMap"]["name"])
                if "secret" in v and not v["secret"].get("optional"):
                    name = v["secret"]["secretName"]
                    if name in EXTERNAL_SECRETS:
                        # made outside the manifests (cert-manager): only its documented keys
                        assert not any(o["metadata"]["name"] == name for o in r.all("Secret"))
                        keys = EXTERNAL_SECRETS[name][1]
                    else:
                        keys = r.secret(name)
                    # a listed key the Secret lacks keeps the pod from starting
                    missing = [i["key"] for i in v["secret"].get("items", []) if i["key"] not in keys]
                    assert not missing, f"{sts['metadata']['name']}: volume {v['name']}: no key {missing}"


def test_loadbalancer_overlay():
    svc = render("overlays/loadbalancer").get("Service", PROXY)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert render("base").get("Service", PROXY)["spec"]["type"] == "ClusterIP"


def test_scale_overlay_runs_five_proxies():
    r = render("overlays/scale-5")
    assert r.get("StatefulSet", PROXY)["spec"]["replicas"] == 5
    assert len(_config(r).peers) == 3, "the bootstrap members stay the same; pods 3 and 4 join"


def test_network_policy_limits_the_admin_port_to_proxies_and_the_scraper():
    """production: the admin port only from proxy pods and Prometheus; the client and
    Sentinel ports (from the proxy's own config) open to all."""
    r = render("overlays/production")
    cfg = _config(r)
    sts = r.get("StatefulSet", PROXY)
    pod_labels = pod_spec_labels(sts)
    policies = [p for p in r.all("NetworkPolicy")
                if all(pod_labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())]
    assert len(policies) == 1, [p["metadata"]["name"] for p in r.all("NetworkPolicy")]
    rules = policies[0]["spec"]["ingress"]
    assert policies[0]["spec"]["policyTypes"] == ["Ingress"]
    open_ports = {p["port"] for rule in rules if "from" not in rule for p in rule["ports"]}
    assert open_ports == {cfg.port, cfg.sentinel_port}
    (admin_rule,) = [rule for rule in rules if "from" in rule]
    assert [p["port"] for p in admin_rule["ports"]] == [cfg.admin_port]
    sources = admin_rule["from"]
    assert any(s.get("podSelector", {}).get("matchLabels") == {k: pod_labels[k] for k in
               ("app.kubernetes.io/name", "app.kubernetes.io/component")} and "namespaceSelector" not in s
               for s in sources), "the other proxies (Raft, reports, joins)"
    assert any(s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
               for s in sources), "the scraper"
    assert "overlays/production" in TARGETS and not render("base").all("NetworkPolicy")


# -- components/tls -------------------------------------------------------------

TLS_FILE_KEYS = {"tls_cert_file": "tls.crt", "tls_key_file": "tls.key", "tls_ca_cert_file": "ca.crt",
                 "tls_upstream_cert_file": "tls.crt", "tls_upstream_key_file": "tls.key",
                 "tls_upstream_ca_cert_file": "ca.crt"}


def _tls_mount(r, sts: dict, path: str, key: str) -> None:
    """`path` is the file `key` of the TLS Secret, mounted read-only in `sts`'s container
    (whole, so that a renewed Secret reaches the pod) and readable by its user only."""
    c = container(sts)
    mount = next((m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    assert mount is not None, f"{sts['metadata']['name']}: {path} is on no volume"
    assert mount.get("readOnly") is True and not mount.get("subPath"), "a subPath mount is never updated"
    vol = next(v for v in pod_spec(sts)["volumes"] if v["name"] == mount["name"])
    assert vol.get("secret", {}).get("secretName") == TLS_SECRET, f"{path}: not from the Secret {TLS_SECRET}"
    assert not vol["secret"].get("items"), "every key of the Secret, as cert-manager writes it"
    assert path == f"{mount['mountPath'].rstrip('/')}/{key}"
    assert key in EXTERNAL_SECRETS[TLS_SECRET][1]
    _assert_only_the_pod_user_reads(sts, c, vol, key)


def test_tls_overlay_secures_every_hop():
    """overlays/tls: clients, Sentinel clients, the admin/Raft port and the hop to Redis
    speak TLS with the certificate of the Secret redis-raft-proxy-tls; Redis serves TLS
    only and replicates over TLS with the same files."""
    r = render("overlays/tls")
    cfg = _config(r)
    assert (cfg.port, cfg.tls_port, cfg.tls_sentinel, cfg.tls_admin, cfg.tls_upstream) == (0, 6380, True, True, True)
    assert cfg.tls_auth_clients == "yes" and cfg.tls_upstream_check_hostname
    proxy = r.get("StatefulSet", PROXY)
    env = _pod_env(r, 0)
    for key, secret_key in TLS_FILE_KEYS.items():
        _tls_mount(r, proxy, env[f"REDIS_RAFT_PROXY_{key.upper()}"], secret_key)
    redis_sts = r.get("StatefulSet", REDIS)
    d = _redis_directives(r)
    assert (d["port"], d["tls-auth-clients"], d["tls-replication"]) == ("0", "yes", "yes")
    for directive, secret_key in (("tls-cert-file", "tls.crt"), ("tls-key-file", "tls.key"),
                                  ("tls-ca-cert-file", "ca.crt")):
        _tls_mount(r, redis_sts, d[directive], secret_key)
    probe = " ".join(container(redis_sts)["readinessProbe"]["exec"]["command"])
    for flag, directive in (("--cacert", "tls-ca-cert-file"), ("--cert", "tls-cert-file"), ("--key", "tls-key-file")):
        assert f"{flag} {d[directive]}" in probe, "redis-cli must present the certificate (tls-auth-clients yes)"
    assert "--tls" in probe.split() and f"-p {d['tls-port']}" in probe
    # the ServiceMonitor (production's) scrapes over https, checking the pods' certificate
    (sm,) = r.all("ServiceMonitor")
    ep = sm["spec"]["endpoints"][0]
    assert ep["scheme"] == "https"
    assert ep["tlsConfig"]["ca"]["secret"] == {"name": TLS_SECRET, "key": "ca.crt"}
    assert ep["tlsConfig"].get("serverName") and not ep["tlsConfig"].get("insecureSkipVerify")
    # the cert-manager objects stay out of the manifests (k8s/README.md shows them)
    assert not [o for o in r.objects if o["apiVersion"].startswith("cert-manager.io/")]


def test_tls_component_without_servicemonitor():
    """components/tls on the base alone (no ServiceMonitor to patch) renders and turns TLS on."""
    r = kustomize_dir(["base"], ["components/tls"])
    assert not r.all("ServiceMonitor")
    c = container(r.get("StatefulSet", PROXY))
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {e["name"]: e.get("value") for e in c["env"]}["REDIS_RAFT_PROXY_TLS_ADMIN"] == "yes"
