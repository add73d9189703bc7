"""Operator commands: `status`, `failover`, `pause`, `resume`, `history`,
`transfer-leadership`, `join`, `remove`.

They talk to a proxy's admin port over HTTP (stdlib only, so they work from
any shell), follow the Raft leader when the contacted proxy is not it, and
print clear one-line outcomes: a proxy that is down, an endpoint that is not a
proxy, a wrong secret or a refused action is one line on stderr, never a
traceback.  Exit status: 0 fine, 1 unhealthy or failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"


def _secret(args) -> str:
    """--secret, else $REDIS_RAFT_PROXY_RAFT_SECRET, else the file $REDIS_RAFT_PROXY_RAFT_SECRET_FILE
    names (as the proxy reads it); "" when none is given (the proxy then answers 403)."""
    if args.secret is not None:
        return args.secret
    if os.environ.get("REDIS_RAFT_PROXY_RAFT_SECRET"):
        return os.environ["REDIS_RAFT_PROXY_RAFT_SECRET"]
    path = os.environ.get("REDIS_RAFT_PROXY_RAFT_SECRET_FILE")
    if path:
        from .config import ConfigError, read_secret_file

        try:
            return read_secret_file("raft_secret_file", path)
        except ConfigError as exc:
            print(f"redis-raft-proxy: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    return ""


def _ssl_context(args):
    """The client TLS context for https:// admin URLs: --cacert (default
    $REDIS_RAFT_PROXY_TLS_CA_CERT_FILE), and --cert/--key to authenticate with a client
    certificate (defaults: $REDIS_RAFT_PROXY_TLS_CERT_FILE / _TLS_KEY_FILE, as a proxy's
    own pod has them). None when the endpoint is plain http."""
    if not args.endpoint.startswith("https://"):
        return None
    from ..tls import TlsConfigError, TlsFiles, client_context

    env = os.environ.get
    files = TlsFiles(args.cert or env("REDIS_RAFT_PROXY_TLS_CERT_FILE", ""),
                     args.key or env("REDIS_RAFT_PROXY_TLS_KEY_FILE", ""),
                     args.cacert or env("REDIS_RAFT_PROXY_TLS_CA_CERT_FILE", ""))
    try:
        # the proxies' certificates are checked against the cluster's CA, not against the URL's host
        # (the same rule the proxies apply to each other)
        return client_context(files, check_hostname=False)
    except TlsConfigError as exc:
        print(f"redis-raft-proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def http(method: str, url: str, body: dict | None = None, secret: str = "", timeout: float = 5.0,
         ssl_context=None):
    """One request; returns (status, decoded JSON or text); status 0 and {"error": ...} when
    no HTTP answer came."""
    if not url.startswith(("http://", "https://")):
        return _no_answer(url, f"bad endpoint {url!r}: expected http://host:port or https://host:port")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", "X-Raft-Secret": secret})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ssl_context) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:     # down, refused, timed out, TLS: one line, no traceback
        reason = getattr(exc, "reason", None) or exc
        return _no_answer(url, str(reason) or type(exc).__name__)
    except http.client.HTTPException as exc:            # something that is not an HTTP server answered
        return _no_answer(url, f"it does not speak HTTP (is it a proxy's admin port?): {type(exc).__name__}")
    except ValueError as exc:                           # a malformed URL
        return _no_answer(url, f"bad endpoint {url!r}: {exc} (expected http://host:port)")
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _no_answer(url: str, reason: str) -> tuple[int, dict]:
    return 0, {"ok": False, "error": f"no answer from {url}: {reason}", "reason": reason}


def one_line(text: object, limit: int = 300) -> str:
    """An answer's text as one line (an HTML error page, say), cut at `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + " ..."


ELECTION_WAIT_S = 5.0    # how long a command waits for a leader while the proxies elect one


def leader_call(endpoint: str, method: str, path: str, body: dict | None, secret: str, timeout: float,
                ssl_context=None, election_wait_s: float = ELECTION_WAIT_S):
    """Call `path` on the leader: ask `endpoint`, follow its 409 hint once. A 409 without a
    leader (an election under way, or the leadership lost while the action was planned:
    nothing was committed) is asked again every 0.3 s for up to `election_wait_s`."""
    deadline = time.monotonic() + election_wait_s
    while True:
        status, doc = http(method, endpoint.rstrip("/") + path, body, secret, timeout, ssl_context)
        if status != 409 or not isinstance(doc, dict):
            return status, doc
        if doc.get("leader_url"):
            return http(method, doc["leader_url"].rstrip("/") + path, body, secret, timeout, ssl_context)
        if time.monotonic() + 0.3 > deadline:
            return status, doc
        time.sleep(0.3)


def _fetch_status(url: str, ssl_context=None) -> dict | None:
    """A proxy's /status, or None: no answer, or not a redis-raft-proxy's status."""
    status, doc = http("GET", url.rstrip("/") + "/status", timeout=2.0, ssl_context=ssl_context)
    if status != 200 or not isinstance(doc, dict) or not all(k in doc for k in ("node", "raft", "topology")):
        return None
    return doc


def gather(endpoint: str, ssl_context=None) -> tuple[dict | None, dict[str, dict | None]]:
    """The contacted proxy's status and every member's (None: unreachable), all through
    `endpoint` (its /status/cluster asks the others: the peers' own URLs need not be
    reachable from here, as through a `kubectl port-forward`); a proxy without that route
    (an older version): each member's URL directly."""
    first = _fetch_status(endpoint, ssl_context)
    if first is None:
        return None, {}
    status, doc = http("GET", endpoint.rstrip("/") + "/status/cluster", timeout=5.0, ssl_context=ssl_context)
    if status == 200 and isinstance(doc, dict) and isinstance(doc.get("proxies"), dict) \
            and doc.get("node") == first.get("node"):
        proxies = {n: st if isinstance(st, dict) and "raft" in st else None for n, st in doc["proxies"].items()}
        proxies[first["node"]] = first
        return first, proxies
    proxies: dict[str, dict | None] = {}
    for name, url in (first.get("peers") or {}).items():
        proxies[name] = first if name == first.get("node") else \
            (_fetch_status(url, ssl_context) if url else None)
    proxies.setdefault(first["node"], first)
    return first, proxies


def _topology_problems(topo: dict, where: str = "") -> list[str]:
    out = []
    if not topo.get("master"):
        out.append(f"{where}no committed topology")
    elif not topo.get("master_up"):
        out.append(f"{where}master {topo['master']} is down")
    if topo.get("writes_held"):
        out.append(f"{where}writes held: {topo['writes_held']}")
    for r in topo.get("replicas", []):
        if not r.get("healthy"):
            out.append(f"{where}replica {r['addr']} not healthy")
    return out


def _shards(first: dict) -> list[dict]:
    """Cluster mode: every shard's topology (single-set mode: none)."""
    return first.get("topology", {}).get("shards") or [] if first.get("mode") == "cluster" else []


def problems(first: dict, proxies: dict[str, dict | None]) -> list[str]:
    if first.get("mode") == "cluster":
        out = [p for t in _shards(first) for p in _topology_problems(t, f"shard {t['id'][:8]}: ")]
        if not _shards(first):
            out.append("no committed topology" + (f": {first['cluster_discovery_error']}"
                                                  if first.get("cluster_discovery_error") else ""))
        out += [f"node setting: {p}" for p in first.get("cluster_config_problems", [])]
        out += [f"migration {m['id']} waiting: {m['waiting']}" for m in first.get("migrations", [])
                if m.get("waiting")]
    else:
        out = _topology_problems(first["topology"])
    for name, st in proxies.items():
        if st is None:
            out.append(f"proxy {name} unreachable")
        elif not st["lease"]["held"]:
            out.append(f"proxy {name} holds no lease")
    leaders = {st["raft"]["leader"] for st in proxies.values() if st}
    if None in leaders or len(leaders) != 1:
        out.append(f"no single Raft leader (seen: {sorted(map(str, leaders))})")
    return out


def _cell(value) -> str:
    return "" if value is None else str(value)


def table(head: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Rows as lines, each column as wide as its widest cell (long pod names and addresses
    fit); the columns in `right` are right-aligned; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        out = [str(c).rjust(w) if i in right else str(c).ljust(w) if i < len(cells) - 1 else str(c)
               for i, (c, w) in enumerate(zip(cells, widths))]
        return " ".join(out).rstrip()
    return [line(head), *(line(r) for r in rows)]


def _node_lines(nodes: list[dict], topo: dict) -> list[str]:
    """The Redis nodes of one topology: the replicas' replication lag (bytes, ms) from the
    topology's `replicas` entries, the probe age (ms since this proxy's last valid probe) from
    `nodes`."""
    replicas = {r["addr"]: r for r in topo.get("replicas", [])}
    rows = []
    for n in nodes:
        r = replicas.get(n["addr"], {})
        rows.append([n["addr"], n["role"], "yes" if n["up"] else "NO", str(n["offset"]),
                     _cell(r.get("replication_lag_bytes")), _cell(r.get("replication_lag_ms")),
                     _cell(n.get("probe_age_ms")), n.get("master") or ""])
    return table(["REDIS NODE", "ROLE", "UP", "OFFSET", "LAG(bytes)", "LAG(ms)", "PROBE AGE(ms)", "FOLLOWS"], rows,
                 frozenset({3, 4, 5, 6}))


def render(first: dict, proxies: dict[str, dict | None]) -> str:
    topo = first["topology"]
    shards = _shards(first)
    if shards:
        from .cluster_cli import progress_line

        by_addr = {n["addr"]: n for n in first["nodes"]}
        lines = []
        for t in shards:
            slots = ",".join(f"{a}-{b}" for a, b in t["slots"]) or "none"
            lines += [f"shard {t['id'][:8]} slots {slots} epoch {t['epoch']}, master {t['master']}"
                      + ("  (writes paused)" if t.get("writes_paused") else "")]
            addrs = [t["master"], *(r["addr"] for r in t["replicas"])]
            lines += ["  " + ln for ln in _node_lines([by_addr[a] for a in addrs if a in by_addr], t)]
        lines += [progress_line(m, time.time()) for m in first.get("migrations", []) if m["state"] in
                  ("running", "queued")]
    else:
        lines = [f"topology epoch {topo['epoch']}, master {topo['master']}"
                 + ("  (writes paused: switchover)" if topo.get("writes_paused") else ""), ""]
        lines += _node_lines(first["nodes"], topo)
    rows = []
    for name, st in sorted(proxies.items()):
        if st is None:
            rows.append([name, "unreachable", "", "", "", "", ""])
            continue
        r = st["raft"]
        rows.append([name, r["role"], str(r["term"]), str(r["leader"]), "yes" if st["lease"]["held"] else "NO",
                     str(st["topology"]["epoch"]), str(st["clients"]["connected"])])
    lines += ["", *table(["PROXY", "RAFT ROLE", "TERM", "LEADER", "LEASE", "EPOCH", "CLIENTS"], rows,
                         frozenset({2, 5, 6}))]
    fo = first.get("failover", {})
    lines += ["", f"failovers led by {first['node']}: {fo.get('total', 0)}, phase {fo.get('phase', '?')}"]
    lines += _dynamic_config_lines(first.get("config") or {})
    paused = topo.get("paused")
    if paused:
        lines.append(f"automatic failover PAUSED by {paused.get('by') or '?'} since {_utc(paused.get('at'))}, "
                     + (f"until {_utc(paused['until'])}" if paused.get("until") else "until resumed")
                     + (f": {paused['reason']}" if paused.get("reason") else ""))
    return "\n".join(lines)


def _dynamic_config_lines(doc: dict) -> list[str]:
    """What `config set` changed for every proxy (the rest is each proxy's own file)."""
    raft = [f"{k}={json.dumps(v['value'])}" for k, v in (doc.get("values") or {}).items() if v.get("source") == "raft"]
    tags = [f"{addr} " + " ".join(f"{t}={json.dumps(v)}" for t, v in sorted(ts.items()))
            for addr, ts in sorted((doc.get("tags") or {}).items())]
    return ([f"set through Raft: {', '.join(raft)}"] if raft else []) + [f"tags: {t}" for t in tags]


def _utc(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t)) if t else "-"


def _no_proxy(command: str, endpoint: str, ssl_context=None) -> str:
    """Why no status came from `endpoint`, in one line."""
    status, doc = http("GET", endpoint.rstrip("/") + "/status", timeout=2.0, ssl_context=ssl_context)
    if status == 0:
        return f"redis-raft-proxy {command}: no proxy answers at {endpoint}: {doc['reason']}"
    return f"redis-raft-proxy {command}: {endpoint} is not a redis-raft-proxy admin endpoint (HTTP {status} on /status)"


def cmd_status(args) -> int:
    first, proxies = gather(args.endpoint, _ssl_context(args))
    if first is None:
        print(_no_proxy("status", args.endpoint, _ssl_context(args)), file=sys.stderr)
        return 1
    issues = problems(first, proxies)
    if args.json:
        print(json.dumps({"status": first, "proxies": proxies, "problems": issues}, indent=2))
    else:
        print(render(first, proxies))
        print("\nhealthy" if not issues else "\nPROBLEMS:\n  " + "\n  ".join(issues))
    return 0 if not issues else 1


def _report(status: int, doc, ok_text: str) -> int:
    if status == 200 and isinstance(doc, dict) and doc.get("ok"):
        print(ok_text.format_map({"learners": [], **doc}))  # a proxy before learners sends none
        return 0
    err = one_line(doc.get("error") if isinstance(doc, dict) else doc)
    print(f"failed (HTTP {status}): {err}" if status else f"failed: {err}", file=sys.stderr)
    return 1


def _target_lag(endpoint: str, target: str, ssl_context=None) -> str:
    """The switchover target's replication lag as `endpoint` sees it, for progress lines."""
    st = _fetch_status(endpoint, ssl_context)
    if st is None:
        return "status unavailable"
    for r in st.get("topology", {}).get("replicas", []):
        if r.get("addr") == target:
            lag = r.get("replication_lag_bytes")
            return f"lag {lag} bytes" if lag is not None else "not reachable"
    if st.get("topology", {}).get("master") == target:
        return "promoted"
    return "not a replica"


# how long to wait for the leader's answer beyond the switchover's own --timeout
# (without --timeout the leader's default applies: 80% of its hold_ms)
ANSWER_MARGIN_S = 5.0
DEFAULT_SWITCHOVER_WAIT_S = 60.0


def cmd_failover(args) -> int:
    if args.timeout is not None and args.timeout <= 0:
        print("failover: --timeout must be positive", file=sys.stderr)
        return 2
    print(f"switchover to {args.to}: pausing writes, waiting for {args.to} to catch up ...", flush=True)
    t0 = time.monotonic()
    result: list = []
    ctx = _ssl_context(args)
    body = {"to": args.to} if args.timeout is None else {"to": args.to, "timeout": args.timeout}
    wait = DEFAULT_SWITCHOVER_WAIT_S if args.timeout is None else args.timeout + ANSWER_MARGIN_S
    call = threading.Thread(target=lambda: result.append(leader_call(
        args.endpoint, "POST", "/admin/failover", body, _secret(args), timeout=wait, ssl_context=ctx)), daemon=True)
    call.start()
    call.join(1.0)
    while call.is_alive():          # progress while the leader waits for the target to catch up
        print(f"  {time.monotonic() - t0:5.1f}s  {args.to}: {_target_lag(args.endpoint, args.to, ctx)}", flush=True)
        call.join(1.0)
    if not result:
        print("failed: no answer from the proxies", file=sys.stderr)
        return 1
    status, doc = result[0]
    if isinstance(doc, dict) and doc.get("ok"):
        doc.setdefault("duration_s", round(time.monotonic() - t0, 3))
    return _report(status, doc, "done: {message} (epoch {epoch}, {duration_s}s)")


def _operator() -> str:
    """Who asks, for the record: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def cmd_pause(args) -> int:
    expires_s = None
    if args.expires is not None:
        from health.maintenance import parse_duration

        try:
            expires_s = parse_duration(args.expires)
        except ValueError as exc:
            print(f"pause: --expires: {exc}", file=sys.stderr)
            return 2
    body = {"reason": args.reason, "expires_s": expires_s, "by": args.by or _operator()}
    status, doc = leader_call(args.endpoint, "POST", "/admin/pause", body, _secret(args), 10.0, _ssl_context(args))
    return _report(status, doc, "{message}")


def cmd_resume(args) -> int:
    status, doc = leader_call(args.endpoint, "POST", "/admin/resume", {"by": args.by or _operator()}, _secret(args),
                              10.0, _ssl_context(args))
    return _report(status, doc, "{message}")


HISTORY_CAUSES = {"objectively_down": "objectively down", "busy": "busy", "restarted_empty": "restarted empty",
                  "manual": "manual", "manual_data_loss_accepted": "manual (data loss accepted)"}


def render_history(records: list[dict]) -> str:
    """The failover history as a table, oldest first (columns as wide as their cells)."""
    shards = any(r.get("shard") for r in records)
    head = ["EPOCH", "TIME (UTC)", *(["SHARD"] if shards else []), "OLD MASTER", "NEW MASTER", "REASON", "HELD(ms)",
            "LEADER"]
    rows = []
    for r in records:
        held = "-" if r.get("held_ms") is None else str(r["held_ms"])
        rows.append([str(r["epoch"]), _utc(r.get("time")), *([(r.get("shard") or "")[:8]] if shards else []),
                     str(r.get("old_master") or "-"), r["new_master"],
                     HISTORY_CAUSES.get(r.get("cause"), r.get("cause") or "?"), held, str(r.get("leader"))])
    lines = table(head, rows, frozenset({0, len(head) - 2}))
    if not records:
        lines.append("(no failover or switchover recorded)")
    return "\n".join(lines)


def cmd_history(args) -> int:
    ctx = _ssl_context(args)
    status, doc = http("GET", args.endpoint.rstrip("/") + "/history", timeout=5.0, ssl_context=ctx)
    if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("history"), list):
        if status == 0:
            print(f"redis-raft-proxy history: {doc['error']}", file=sys.stderr)
        else:
            print(f"redis-raft-proxy history: {args.endpoint} is not a redis-raft-proxy admin endpoint "
                  f"(HTTP {status} on /history: {one_line(doc, 120)})", file=sys.stderr)
        return 1
    records = doc["history"][-args.limit:] if args.limit else doc["history"]
    print(json.dumps(records, indent=2) if args.json else render_history(records))
    return 0


def cmd_transfer(args) -> int:
    if args.if_leader:
        st = _fetch_status(args.endpoint, _ssl_context(args))
        if st is None:
            print(f"transfer-leadership: no proxy answers at {args.endpoint}", file=sys.stderr)
            return 1
        role = st.get("raft", {}).get("role")
        if role != "leader":
            print(f"{st.get('node')} is not the leader ({role}): nothing to transfer")
            return 0
    body = {"to": args.to} if args.to else {}
    status, doc = leader_call(args.endpoint, "POST", "/admin/transfer-leadership", body, _secret(args), 10.0,
                              _ssl_context(args))
    return _report(status, doc, "leadership transferred; leader is now {leader}")


def cmd_join(args) -> int:
    body = {"node": args.node, "url": args.url, **({"learner": True} if args.learner else {})}
    status, doc = leader_call(args.endpoint, "POST", "/admin/members", body, _secret(args), 10.0, _ssl_context(args))
    return _report(status, doc, "members: {members} learners: {learners}")


def cmd_promote(args) -> int:
    status, doc = leader_call(args.endpoint, "POST", f"/admin/members/{args.node}/promote", {}, _secret(args), 10.0,
                              _ssl_context(args))
    return _report(status, doc, "members: {members} learners: {learners}")


def cmd_remove(args) -> int:
    status, doc = leader_call(args.endpoint, "DELETE", f"/admin/members/{args.node}", None, _secret(args), 10.0,
                              _ssl_context(args))
    return _report(status, doc, "members: {members} learners: {learners}")


class HELP(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every default (and argparse the allowed values), except where the help
    text already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default" in (action.help or "") or action.required:
            return action.help
        return super()._get_help_string(action)


def add_commands(sub) -> None:
    def common(p):
        p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="a proxy's admin URL")
        p.add_argument("--secret", default=None, help="shared secret (default: $REDIS_RAFT_PROXY_RAFT_SECRET, "
                       "or the file named by $REDIS_RAFT_PROXY_RAFT_SECRET_FILE)")
        p.add_argument("--cacert", default=None, help="CA of an https:// endpoint (default: "
                       "$REDIS_RAFT_PROXY_TLS_CA_CERT_FILE)")
        p.add_argument("--cert", default=None, help="client certificate, instead of the secret (default: "
                       "$REDIS_RAFT_PROXY_TLS_CERT_FILE)")
        p.add_argument("--key", default=None, help="its key (default: $REDIS_RAFT_PROXY_TLS_KEY_FILE)")

    p = sub.add_parser("status", help="the cluster at a glance; exit 1 when unhealthy", formatter_class=HELP)
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("failover", help="graceful switchover to a replica (no write lost)", formatter_class=HELP)
    common(p)
    p.add_argument("--to", required=True, help="the replica to promote, host:port")
    p.add_argument("--timeout", type=float, default=None, help="seconds the whole switchover may take, the "
                   "target's catch-up included; then writes resume on the old master (default: 80%% of the "
                   "leader's hold_ms, so no write held meanwhile times out)")
    p.set_defaults(func=cmd_failover)
    p = sub.add_parser("pause", help="maintenance mode: no automatic failover until resume (failover --to still "
                       "works); every shard in cluster mode", formatter_class=HELP)
    common(p)
    p.add_argument("--reason", default="", help="why, shown by status")
    p.add_argument("--expires", default=None, help="end the pause by itself after this long, e.g. 30m, 2h, 90s "
                   "(default: none, until resume)")
    p.add_argument("--by", default=None, help="who pauses, for the record (default: user@host)")
    p.set_defaults(func=cmd_pause)
    p = sub.add_parser("resume", help="end maintenance mode: automatic failover again", formatter_class=HELP)
    common(p)
    p.add_argument("--by", default=None, help="who resumes, for the log (default: user@host)")
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("history", help="every failover and switchover the cluster remembers (the last 100)",
                       formatter_class=HELP)
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=0, help="show only the last N (0: all)")
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("transfer-leadership", help="hand Raft leadership to another proxy", formatter_class=HELP)
    common(p)
    p.add_argument("--to", default=None, help="the proxy to lead (default: any other member)")
    p.add_argument("--if-leader", action="store_true",
                   help="only if the proxy at --endpoint leads; else do nothing and exit 0 (for preStop hooks)")
    p.set_defaults(func=cmd_transfer)
    p = sub.add_parser("join", help="add a proxy to the Raft membership", formatter_class=HELP)
    common(p)
    p.add_argument("--node", required=True)
    p.add_argument("--url", required=True, help="the new proxy's admin URL")
    p.add_argument("--learner", action="store_true", help="as a non-voting learner")
    p.set_defaults(func=cmd_join)
    p = sub.add_parser("promote", help="make a Raft learner a voter", formatter_class=HELP)
    common(p)
    p.add_argument("--node", required=True)
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("remove", help="remove a (dead) proxy, voter or learner, from the Raft membership",
                       formatter_class=HELP)
    common(p)
    p.add_argument("--node", required=True)
    p.set_defaults(func=cmd_remove)
    from .cluster_cli import add_cluster_commands

    add_cluster_commands(sub, common)
    from .config_cli import add_config_commands

    add_config_commands(sub, common)
