"""docs/sentinel.md, "Migrating from Bitnami's Redis Sentinel chart": the overlay, the
proxy.toml and the Service patch it shows work with the manifests as they are (rendered
with kubectl kustomize, the config loaded with the proxy's own loader)."""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import textwrap
from pathlib import Path

import yaml

from .kube import (
    K8S,
    ROOT,
    Rendered,
    _kustomize,
    committed_secret_keys,
    container,
    container_port,
    pod_spec_labels,
)
from .test_manifests import PROXY, SENTINEL_SERVICE, _config

DOC = ROOT / "docs" / "sentinel.md"
SECTION = "## Migrating from Bitnami's Redis Sentinel chart"
CHART_NODE = "my-release-redis-node-{i}.my-release-redis-headless.redis.svc.cluster.local:6379"


def _section() -> str:
    text = DOC.read_text()
    assert SECTION in text, f"{DOC}: no section {SECTION!r}"
    return text[text.index(SECTION):]


def _blocks(text: str) -> list[str]:
    """The fenced code blocks (those in list items dedented)."""
    return [textwrap.dedent(b) for b in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)]


def _render_doc_overlay() -> Rendered:
    blocks = _blocks(_section())
    kustomization = next(b for b in blocks if b.startswith("# k8s/overlays/mine/kustomization.yaml"))
    toml = next(b for b in blocks if b.startswith('bind = "0.0.0.0"'))
    with tempfile.TemporaryDirectory(prefix="k8s-bitnami-") as tmp:
        root = Path(tmp)
        # the overlay sits in k8s/overlays/mine in the docs; kustomize wants a relative path
        production = os.path.relpath(K8S / "overlays" / "production", root)
        (root / "kustomization.yaml").write_text(kustomization.replace("- ../production", f"- {production}"))
        (root / "proxy.toml").write_text(toml)
        keys = committed_secret_keys() + ["client-password"]
        (root / "secret.env").write_text("".join(f"{k}={secrets.token_hex(16)}\n" for k in keys))
        text = _kustomize(root, "the overlay of docs/sentinel.md")
    return Rendered("docs/sentinel.md overlay", [d for d in yaml.safe_load_all(text) if d])


def test_the_docs_overlay_runs_the_proxies_over_the_charts_redis_pods():
    r = _render_doc_overlay()
    assert {o["metadata"]["name"] for o in r.all("StatefulSet")} == {PROXY}, "no Redis pods of k8s/'s own"
    assert not [o for o in r.objects if o["metadata"]["name"] == "redis" or
                o["metadata"]["name"].startswith("redis-config")], "k8s/'s own Redis objects are all dropped"
    cfg = _config(r)
    assert cfg.redis_nodes == [CHART_NODE.format(i=i) for i in range(3)]
    assert cfg.master in cfg.redis_nodes and cfg.master_name == "mymaster" and cfg.sentinel_port == 26379
    assert cfg.requirepass, "client-password: Sentinel and data clients keep sending the chart's password"
    assert len(cfg.peers) == 3
    sts = r.get("StatefulSet", PROXY)
    c = container(sts)
    assert container_port(c, "sentinel") == cfg.sentinel_port
    assert r.get("Service", SENTINEL_SERVICE)["spec"]["ports"][0]["port"] == 26379


def test_the_docs_service_patch_points_the_charts_service_at_the_proxies():
    """Step 4's JSON patch: its selector selects the proxy pods, its targetPorts are the proxy
    container's port names, its ports keep the chart's names and numbers."""
    section = _section()
    patch = re.search(r"patch service my-release-redis --type json -p '(\[.*?\])'", section, re.DOTALL)
    assert patch, "no Service patch in the section"
    ops = {op["path"]: op["value"] for op in json.loads(patch.group(1))}
    r = _render_doc_overlay()
    sts = r.get("StatefulSet", PROXY)
    labels = pod_spec_labels(sts)
    assert all(labels.get(k) == v for k, v in ops["/spec/selector"].items())
    ports = {p["name"]: p for p in ops["/spec/ports"]}
    assert (ports["tcp-redis"]["port"], ports["tcp-sentinel"]["port"]) == (6379, 26379)
    cfg = _config(r)
    c = container(sts)
    assert container_port(c, ports["tcp-redis"]["targetPort"]) == cfg.port
    assert container_port(c, ports["tcp-sentinel"]["targetPort"]) == cfg.sentinel_port
