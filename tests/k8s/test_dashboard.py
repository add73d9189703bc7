"""k8s/grafana-dashboard.json and the alerting rules: every metric (and label)
their PromQL uses is one that a real proxy exposes on /metrics, and the
dashboard covers what operators watch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from .kube import HOST, K8S, KUBECTL, REDIS_SERVER, VENV_BIN, free_ports, http_get, wait_until

DASHBOARD = K8S / "grafana-dashboard.json"
PREFIX = "redis_raft_proxy_"

# What the dashboard must show (issue 7).
REQUIRED = {
    "redis_raft_proxy_master_info", "redis_raft_proxy_topology_epoch",
    "redis_raft_proxy_failovers_total", "redis_raft_proxy_failover_phase",
    "redis_raft_proxy_last_failover_duration_seconds",
    "redis_raft_proxy_commands_total", "redis_raft_proxy_command_duration_seconds_bucket",
    "redis_raft_proxy_upstream_errors_total",
    "redis_raft_proxy_raft_role", "redis_raft_proxy_raft_term", "redis_raft_proxy_raft_leader_changes_total",
    "redis_raft_proxy_redis_replica_lag_bytes", "redis_raft_proxy_redis_node_up",
    "redis_raft_proxy_lease_held", "redis_raft_proxy_held_clients",
    # issue 18: replication per replica, failover/switchover durations, Raft RPCs, the process, the build
    "redis_raft_proxy_redis_replica_lag_seconds", "redis_raft_proxy_redis_replica_link_up",
    "redis_raft_proxy_failover_duration_seconds_bucket", "redis_raft_proxy_switchover_duration_seconds_bucket",
    "redis_raft_proxy_raft_rpc_duration_seconds_bucket", "redis_raft_proxy_raft_rpc_errors_total",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
    "redis_raft_proxy_build_info",
}
# Labels Prometheus adds to every series of a target (not on /metrics): `pod` and `deployment`
# come from the ServiceMonitor's relabelings (tests/k8s/test_alerts.py checks that they do).
TARGET_LABELS = {"job", "instance", "pod", "namespace", "deployment"}
# Families of the standard prometheus_client collectors the proxy registers (proxy/process/metrics.py),
# and the series Prometheus itself writes for every target.
STANDARD_PREFIXES = ("process_", "python_")
SYNTHETIC = {"up"}

PROMQL_WORDS = {
    # aggregations and keywords
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
    # functions used in dashboards
    "rate", "irate", "increase", "delta", "idelta", "changes", "resets", "deriv", "histogram_quantile",
    "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "sort", "sort_desc", "time",
    "timestamp", "vector", "scalar", "label_replace", "label_join", "absent", "absent_over_time",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "quantile_over_time", "predict_linear", "label_values",
}


# -- reading the dashboard ------------------------------------------------------

def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _expressions(d: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and variable query."""
    out = []
    for p in _panels(d):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r}", t["expr"]))
    for a in d.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a['name']!r}", a["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable ${v['name']}", q))
    return out


def _rule_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of the alerting rules (components/servicemonitor)."""
    from .kube import render

    if KUBECTL is None:
        return []
    out = []
    for rule in render("overlays/production").all("PrometheusRule"):
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                out.append((f"alert {r.get('alert') or r.get('record')}", r["expr"]))
    return out


def _all_expressions() -> list[tuple[str, str]]:
    return _expressions(_dashboard()) + _rule_expressions()


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """The /metrics series an expression reads (ours and the standard process_/python_ ones)."""
    prefixes = "|".join((PREFIX, *STANDARD_PREFIXES))
    return set(re.findall(rf"\b(?<![\w:])(?:{prefixes})[a-zA-Z0-9_:]+\b", expr))


def unknown_identifiers(expr: str) -> set[str]:
    """Identifiers that are neither PromQL words nor our metrics (a typo or a
    metric from another exporter)."""
    text = _STRING.sub('""', expr)
    # label_values(metric, label): the label is a name, not an expression
    text = re.sub(r"^\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*$", r"label_values(\1)", text)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = _GROUPING.sub(lambda m: m.group(1), text)
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", "0", text)
    words = set(_IDENT.findall(text))
    return {w for w in words if w.lower() not in PROMQL_WORDS and w not in SYNTHETIC
            and not w.startswith((PREFIX, *STANDARD_PREFIXES))}


def label_uses(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """({metric: labels in its matchers}, labels in by/without/on/ignoring)."""
    matchers: dict[str, set[str]] = {}
    for m in _SELECTOR.finditer(expr):
        metric, body = m.group(1), _STRING.sub('""', m.group(2))
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))
        if metric:
            matchers.setdefault(metric, set()).update(labels)
    grouping = set()
    for m in _GROUPING.finditer(expr):
        grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
    return matchers, grouping


# -- static checks -----------------------------------------------------------------

def test_dashboard_is_well_formed():
    d = _dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in _panels(d)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells = set()
    for p in _panels(d):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
            assert p["datasource"]["uid"] == "${datasource}"
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in d["templating"]["list"])


def test_dashboard_covers_the_operators_view():
    used = set().union(*(metric_names(e) for _, e in _expressions(_dashboard())))
    assert REQUIRED <= used, f"missing from the dashboard: {sorted(REQUIRED - used)}"
    exprs = " ".join(e for _, e in _expressions(_dashboard()))
    assert "rate(redis_raft_proxy_commands_total" in exprs and "by (class)" in exprs
    assert "histogram_quantile(" in exprs and "by (le, class)" in exprs


def test_dashboard_is_scoped_by_namespace_and_deployment_and_names_pods():
    d = _dashboard()
    variables = [v["name"] for v in d["templating"]["list"]]
    assert variables[:4] == ["datasource", "namespace", "deployment", "pod"], variables
    for where, expr in _expressions(d):
        if where.startswith("variable"):
            continue
        for m in _SELECTOR.finditer(expr):
            if m.group(1) and metric_names(m.group(1)):
                body = m.group(2)
                assert 'namespace=~"$namespace"' in body and 'deployment=~"$deployment"' in body \
                    and 'pod=~"$pod"' in body, f"{where}: {m.group(0)} is not scoped by the variables"
        assert "instance" not in expr, f"{where} uses the scrape address, not the pod name: {expr}"
    legends = [t.get("legendFormat", "") for p in _panels(d) for t in p.get("targets", [])]
    assert not [x for x in legends if "{{instance}}" in x]
    assert any("{{pod}}" in x for x in legends)


def test_expressions_use_only_promql_and_our_metrics():
    bad = [(where, sorted(u)) for where, e in _all_expressions() if (u := unknown_identifiers(e))]
    assert not bad, f"unknown identifiers (typo, or not a redis-raft-proxy metric): {bad}"


# -- against a real proxy ----------------------------------------------------------

@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """/metrics of one real proxy over a real master + replica, after traffic."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    redis = pytest.importorskip("redis")
    parser = pytest.importorskip("prometheus_client.parser")
    tmp = tmp_path_factory.mktemp("dashboard")
    m_port, r_port, port, admin, tls_port = free_ports(5)
    from proxy.process.devcerts import DevCA

    ca = DevCA(tmp / "certs")
    leaf = ca.leaf("proxy")     # a TLS port too, so that the tls_* metrics have samples
    procs = []
    try:
        for p, extra in ((m_port, []), (r_port, ["--replicaof", HOST, str(m_port)])):
            d = tmp / f"redis-{p}"
            d.mkdir()
            procs.append(subprocess.Popen([REDIS_SERVER, "--port", str(p), "--bind", HOST, "--save", "",
                                           "--appendonly", "no", "--dir", str(d), *extra],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp), "LC_ALL": "C.UTF-8"}
        with open(tmp / "proxy.log", "wb") as log:
            procs.append(subprocess.Popen([str(VENV_BIN / "redis-raft-proxy"), "run", "--node", "proxy-0",
                                           "--bind", HOST, "--port", str(port), "--admin-port", str(admin),
                                           "--redis-nodes", f"{HOST}:{m_port},{HOST}:{r_port}",
                                           "--tls-port", str(tls_port), "--tls-cert-file", str(leaf.cert),
                                           "--tls-key-file", str(leaf.key), "--tls-auth-clients", "no"],
                                          env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        logtail = lambda: (tmp / "proxy.log").read_text(errors="replace")[-3000:]
        wait_until(lambda: http_get(f"http://{HOST}:{admin}/readyz")[0] == 200, 30, "the proxy Ready",
                   diagnose=logtail)
        c = redis.Redis(host=HOST, port=port, socket_timeout=5)

        def set_ok():
            try:
                return c.set("dash:k", "v")
            except redis.exceptions.TryAgainError:
                return False
        wait_until(set_ok, 20, "a write through the proxy", interval=0.2, diagnose=logtail)
        for i in range(20):
            c.set(f"dash:{i}", i)
            c.get(f"dash:{i}")
        c.incr("dash:n")

        def lag_sample():
            code, text = http_get(f"http://{HOST}:{admin}/metrics")
            return code == 200 and "redis_raft_proxy_redis_replica_lag_bytes{" in text and text
        text = wait_until(lag_sample, 20, "replica lag in /metrics", interval=0.2, diagnose=logtail)
        return list(parser.text_string_to_metric_families(text))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
            "info": ("_info",), "stateset": ("",), "gauge": ("",), "unknown": ("",)}


def _exposed(families) -> dict[str, set[str] | None]:
    """Every series name a scrape can hold -> the label names seen on it (None:
    the family had no sample in this scrape, so its labels are unknown)."""
    out: dict[str, set[str] | None] = {}
    for f in families:
        for suffix in SUFFIXES[f.type]:
            out.setdefault(f.name + suffix, None)
        for s in f.samples:
            labels = out.get(s.name) or set()
            out[s.name] = labels | set(s.labels)
    return out


def test_every_dashboard_metric_is_exposed(scraped):
    exposed = _exposed(scraped)
    assert "redis_raft_proxy_commands_total" in exposed
    exprs = _all_expressions()
    assert any(where.startswith("alert ") for where, _ in exprs) or KUBECTL is None
    missing = [(where, sorted(metric_names(e) - set(exposed))) for where, e in exprs
               if metric_names(e) - set(exposed)]
    assert not missing, f"metrics the proxy does not expose: {missing}"


def test_every_dashboard_label_is_exposed(scraped):
    exposed = _exposed(scraped)
    problems = []
    for where, expr in _all_expressions():
        matchers, grouping = label_uses(expr)
        known: set[str] = set(TARGET_LABELS)
        for metric, labels in matchers.items():
            seen = exposed.get(metric)
            if seen is None:
                continue      # no sample in this scrape (e.g. no upstream error happened)
            known |= seen
            if labels - seen - TARGET_LABELS:
                problems.append((where, metric, sorted(labels - seen - TARGET_LABELS)))
        for m in metric_names(expr):
            known |= exposed.get(m) or set()
        unknown = grouping - known
        if unknown and all(exposed.get(m) is not None for m in metric_names(expr)):
            problems.append((where, "by/without", sorted(unknown)))
    assert not problems, f"labels the metrics do not carry: {problems}"


def test_checks_are_not_vacuous(scraped):
    """The helpers above catch the mistakes they are for."""
    assert unknown_identifiers('sum(rate(http_requests_total{job="x"}[5m])) by (code)') == {"http_requests_total"}
    assert unknown_identifiers('histogram_quantile(0.99, sum by (le) (rate(redis_raft_proxy_x_bucket[1m])))') == set()
    assert label_uses('sum by (le, class) (rate(m_bucket{job=~"$job", class!="read"}[1m]))') == \
        ({"m_bucket": {"job", "class"}}, {"le", "class"})
    exposed = _exposed(scraped)
    # suffix rules: a counter is exposed as <name>_total, a histogram as _bucket/_sum/_count, never bare
    assert "redis_raft_proxy_commands_total" in exposed and "redis_raft_proxy_commands" not in exposed
    assert {"redis_raft_proxy_command_duration_seconds_bucket", "redis_raft_proxy_command_duration_seconds_sum",
            "redis_raft_proxy_command_duration_seconds_count"} <= set(exposed)
    assert "redis_raft_proxy_command_duration_seconds" not in exposed
    assert "le" in exposed["redis_raft_proxy_command_duration_seconds_bucket"]
    assert {"class", "node"} <= exposed["redis_raft_proxy_commands_total"]
    assert exposed["redis_raft_proxy_redis_replica_lag_bytes"] == {"node"}
