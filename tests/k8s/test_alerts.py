"""The alerting rules (k8s/components/servicemonitor/prometheusrule.yaml): the
alerts issue 18 asks for exist, each is scoped per deployment, reads only
metrics the proxy defines (or Prometheus' `up`), and links a runbook section
of docs/runbook.md that exists. No process is started: the metric names come
from proxy/process/metrics.py's families and prometheus_client's collectors
(tests/k8s/test_dashboard.py also checks them against a real proxy's /metrics)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from .kube import K8S, ROOT
from .test_dashboard import SYNTHETIC, label_uses, metric_names, unknown_identifiers

yaml = pytest.importorskip("yaml")

RULES = K8S / "components" / "servicemonitor" / "prometheusrule.yaml"
MONITOR = K8S / "components" / "servicemonitor" / "servicemonitor.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
METRICS_SOURCE = ROOT / "proxy" / "process" / "metrics.py"
SCOPE = ("namespace", "deployment")
REQUIRED = {
    "RedisRaftProxyDown", "RedisRaftProxyAbsent", "RedisRaftProxyNoLeader", "RedisRaftProxyNoLease",
    "RedisRaftProxyTwoRedisMasters", "RedisRaftProxyReplicaLagHigh", "RedisRaftProxyFailoverBlocked",
    "RedisRaftProxyFailoversTooFrequent",
}
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count"), "Info": ("_info",)}


def _alerts() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["spec"]["groups"] for r in g["rules"] if "alert" in r]


def defined_series() -> set[str]:
    """Every series name the proxy can expose: its own families (by type, from the
    source of proxy/process/metrics.py) and the standard collectors it registers."""
    text = METRICS_SOURCE.read_text()
    out = set()
    for kind, name in re.findall(r'(Counter|Gauge|Histogram|Info)MetricFamily,?\(?\s*"(redis_raft_proxy_\w+)"', text):
        out |= {name + s for s in SUFFIXES[kind]}
    for name in re.findall(r'_histogram\(\s*"(redis_raft_proxy_\w+)"', text):
        out |= {name + s for s in SUFFIXES["Histogram"]}
    registry = CollectorRegistry(auto_describe=False)
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    out |= {s.name for fam in registry.collect() for s in fam.samples}
    return out


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_the_alerts_the_issue_asks_for_exist_once_each():
    names = [a["alert"] for a in _alerts()]
    assert len(names) == len(set(names)), "alert names are unique"
    assert REQUIRED <= set(names), f"missing: {sorted(REQUIRED - set(names))}"
    for a in _alerts():
        assert a["labels"]["severity"] in ("critical", "warning", "info"), a["alert"]
        assert a["annotations"]["summary"].strip(), a["alert"]


def test_every_alert_reads_real_metrics():
    known = defined_series()
    assert {"redis_raft_proxy_commands_total", "redis_raft_proxy_failover_duration_seconds_bucket",
            "redis_raft_proxy_build_info", "process_open_fds"} <= known      # the extraction works
    for a in _alerts():
        expr = a["expr"]
        assert not unknown_identifiers(expr), (a["alert"], unknown_identifiers(expr))
        missing = metric_names(expr) - known
        assert not missing, f"{a['alert']} reads metrics the proxy does not define: {sorted(missing)}"
        assert metric_names(expr) or set(re.findall(r"\w+", expr)) & SYNTHETIC, a["alert"]


def test_every_alert_is_scoped_per_deployment():
    """Each alert keeps namespace and deployment: aggregated by them, or a per-target series
    (`up`) that carries them. Only `absent` cannot: no series is left to name a deployment."""
    for a in _alerts():
        expr = a["expr"]
        if expr.startswith("absent("):
            continue
        _, grouping = label_uses(expr)
        outer = re.match(r"^\s*\w+\s+by\s*\(([^)]*)\)", expr)
        if outer:
            labels = {x.strip() for x in outer.group(1).split(",")}
            assert set(SCOPE) <= labels, f"{a['alert']} aggregates away {set(SCOPE) - labels}: {expr}"
        else:
            assert not grouping and re.match(r"^up\{", expr), f"{a['alert']} is not scoped per deployment: {expr}"
        text = a["annotations"]["summary"]
        assert "$labels.namespace" in text, f"{a['alert']}'s summary does not name the namespace"


def test_the_servicemonitor_sets_the_labels_the_alerts_use():
    doc = yaml.safe_load(MONITOR.read_text())
    relabel = {r["targetLabel"]: r for r in doc["spec"]["endpoints"][0]["relabelings"]}
    assert relabel["deployment"]["sourceLabels"] == ["__meta_kubernetes_pod_controller_name"]
    assert relabel["pod"]["sourceLabels"] == ["__meta_kubernetes_pod_name"]
    job = relabel["job"]["replacement"]
    ups = [a for a in _alerts() if re.search(r"\bup\{", a["expr"])]
    assert ups and all(f'up{{job="{job}"}}' in a["expr"] for a in ups)


def test_every_alert_links_an_existing_runbook_section():
    runbook = RUNBOOK.read_text()
    sections = anchors(runbook)
    for a in _alerts():
        url = a["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md" and anchor, f"{a['alert']}: runbook_url {url!r}"
        assert anchor in sections, f"{a['alert']}: no section #{anchor} in docs/runbook.md"
        assert anchor == a["alert"].lower(), f"{a['alert']}: its section is named after it"
    # and the runbook's own cross-links resolve
    for link in re.findall(r"\]\(#([^)]+)\)", runbook):
        assert link in sections, f"docs/runbook.md links #{link}, which is no section"
    assert anchors("## RedisRaftProxyDown\n### What it means, now!") == {"redisraftproxydown", "what-it-means-now"}
