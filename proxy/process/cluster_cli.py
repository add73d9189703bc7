"""`redis-raft-proxy cluster ...`: moving slots between shards, adding and removing
shards (issue 15). Each action is committed by the Raft leader and carried out by it;
this command starts it and, unless `--no-wait`, shows its progress until it ends
(Ctrl-C stops watching, not the migration: `cluster cancel` does that)."""

from __future__ import annotations

import sys
import time

from .ops_cli import (
    HELP,
    _fetch_status,
    _no_proxy,
    _report,
    _secret,
    _ssl_context,
    leader_call,
)


def _start(args, action: str, body: dict) -> int:
    status, doc = leader_call(args.endpoint, "POST", f"/admin/cluster/{action}", body, _secret(args), 30.0,
                              _ssl_context(args))
    code = _report(status, doc, "{message}")
    if code or args.no_wait or not isinstance(doc, dict) or not doc.get("migrations"):
        return code
    return watch(args, [m["id"] for m in doc["migrations"]])


def progress_line(m: dict, now: float) -> str:
    """`[#####-----] 1200/5461 slots  3400 keys  110 slots/s  ETA 39s  running`"""
    done, total = int(m.get("done", 0)), max(1, int(m.get("total", 1)))
    width = 30
    bar = "#" * (done * width // total) + "-" * (width - done * width // total)
    elapsed = max(1e-3, (m.get("updated_at") or now) - (m.get("started_at") or now))
    rate = done / elapsed if done else 0.0
    eta = f"ETA {(total - done) / rate:.0f}s" if rate and done < total else ""
    extra = f" ({m['waiting']})" if m.get("waiting") else f" ({m['reason']})" if m.get("reason") else ""
    return (f"{m['id']} {m['source'][:8]}->{m['target'][:8]} [{bar}] {done}/{total} slots  "
            f"{m.get('keys_moved', 0)} keys  {rate:.0f} slots/s  {eta}  {m['state']}{extra}")


def watch(args, ids: list[str], interval: float = 0.5, give_up_s: float = 30.0) -> int:
    """Print the migrations' progress until they end (0 when all are done, 1 otherwise).
    An endpoint that stops answering (or forgets the migrations) is retried for
    `give_up_s`, then watching stops with 2: the migration goes on on the leader."""
    ctx = _ssl_context(args)
    last = ""
    lost_since: float | None = None
    try:
        while True:
            st = _fetch_status(args.endpoint, ctx)
            mine = [m for m in (st or {}).get("migrations", []) if m["id"] in ids]
            if mine:
                lost_since = None
                text = "\n".join(progress_line(m, time.time()) for m in mine)
                if text != last:
                    print(text, flush=True)
                    last = text
                if all(m["state"] not in ("running", "queued") for m in mine):
                    failed = [m for m in mine if m["state"] != "done"]
                    return 1 if failed else 0
            elif lost_since is None:
                lost_since = time.monotonic()
                why = "does not answer" if st is None else "shows none of these migrations"
                print(f"{args.endpoint} {why}; trying again for {give_up_s:.0f}s", file=sys.stderr, flush=True)
            elif time.monotonic() - lost_since > give_up_s:
                print(f"stopped watching: no progress from {args.endpoint} for {give_up_s:.0f}s; the migration "
                      "goes on on the Raft leader (redis-raft-proxy cluster migrations --endpoint <another "
                      "proxy> shows it)", file=sys.stderr)
                return 2
            time.sleep(interval)
    except KeyboardInterrupt:
        print("stopped watching; the migration goes on (redis-raft-proxy cluster cancel stops it)", file=sys.stderr)
        return 130


def cmd_move(args) -> int:
    return _start(args, "move-slots", {"from": args.source, "to": args.target, "slots": args.slots})


def cmd_add(args) -> int:
    replicas = [r for r in (args.replicas or "").split(",") if r]
    return _start(args, "add-shard", {"master": args.master, "replicas": replicas})


def cmd_remove(args) -> int:
    return _start(args, "remove-shard", {"shard": args.shard})


def cmd_rebalance(args) -> int:
    return _start(args, "rebalance", {"by": args.by})


def cmd_cancel(args) -> int:
    status, doc = leader_call(args.endpoint, "POST", "/admin/cluster/cancel", {}, _secret(args), 10.0,
                              _ssl_context(args))
    return _report(status, doc, "{message}")


def cmd_migrations(args) -> int:
    st = _fetch_status(args.endpoint, _ssl_context(args))
    if st is None:
        print(_no_proxy("cluster migrations", args.endpoint, _ssl_context(args)), file=sys.stderr)
        return 1
    for m in st.get("migrations", []):
        print(progress_line(m, time.time()))
    return 0


def add_cluster_commands(sub, common) -> None:
    p = sub.add_parser("cluster", help="cluster mode: move slots, add and remove shards", formatter_class=HELP)
    csub = p.add_subparsers(dest="cluster_command", required=True)

    def action(name: str, help_text: str, func, wait: bool = True):
        a = csub.add_parser(name, help=help_text, formatter_class=HELP)
        common(a)
        if wait:
            a.add_argument("--no-wait", action="store_true", help="start it and return (no progress bar)")
        a.set_defaults(func=func)
        return a

    a = action("move-slots", "move slots from one shard to another", cmd_move)
    a.add_argument("--from", dest="source", required=True, help="shard id (as /status shows it) or a node address")
    a.add_argument("--to", dest="target", required=True, help="shard id or a node address")
    a.add_argument("--slots", required=True, help="e.g. 0-999,2000")
    a = action("add-shard", "bring new nodes in as a shard and rebalance slots onto it", cmd_add)
    a.add_argument("--master", required=True, help="the new shard's master, host:port (cluster-enabled, empty)")
    a.add_argument("--replicas", default="", help="its replicas, comma-separated host:port")
    a = action("remove-shard", "move a shard's slots to the others, then release its nodes", cmd_remove)
    a.add_argument("--shard", required=True, help="shard id or a node address")
    a = action("rebalance", "even out the slots (or keys) over the shards", cmd_rebalance)
    a.add_argument("--by", choices=("slots", "keys"), default="slots",
                   help="even out slot counts (default) or key counts (CLUSTER COUNTKEYSINSLOT per slot)")
    action("cancel", "stop the migrations in flight after their current batch", cmd_cancel, wait=False)
    action("migrations", "list migrations and their progress", cmd_migrations, wait=False)
