"""`redis-raft-proxy`: run a proxy, start a local demo cluster, and admin commands."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from .. import __version__
from .config import (
    ConfigError,
    add_flags,
    config_problems,
    flags_from_args,
    load_config,
)
from .logging_setup import setup_logging

log = logging.getLogger("proxy.cli")


_gc_paused = False     # by `_pause_gc_for_startup`, until `_resume_gc`


def _pause_gc_for_startup() -> None:
    """A start imports about 500 modules and builds about 90,000 objects the cyclic
    collector tracks, nearly all of them alive as long as the process; the collector, run
    by allocation counts, walks them over and over meanwhile (a sixth of a start's CPU,
    a full collection among the passes) and finds almost nothing to free. So it is off
    until the listeners are up."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def _resume_gc() -> None:
    """Once serving (or when `run` returns early): what lives now is frozen (`gc.freeze`:
    a generation the collector never walks again, so later full collections cost what the
    proxy allocates while serving, not its start) and the collector is back on. The price:
    an object of the start that later ends up in a garbage cycle (a replaced configuration,
    say) is never freed, so at most what the start built leaks, once. Idempotent."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _install_signal_handlers(server, cfg, tls, read_config) -> asyncio.Event:
    """SIGINT and SIGTERM set the returned event (drain, then stop); SIGHUP reloads the
    configuration's safe keys (proxy/process/reload.py). Installed before anything listens:
    a SIGHUP sent once the port answers (a test did, a logrotate may) found Python's
    default, which ends the process, while the start still awaited Raft."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if read_config is not None:
        from .reload import reload_config

        def reloaded(plan) -> None:
            tls.reloader.check()
            server.limits_changed()
            server.live_config.set_base(plan.dynamic)     # Raft's values still win over the file's

        loop.add_signal_handler(signal.SIGHUP, reload_config, cfg, read_config, reloaded)
    return stop


async def _serve(cfg, tls, read_config=None) -> int:
    from aiohttp import web

    from health.shard.reports import add_report_route, stream_payload_handler

    from .admin import make_app
    from .server import ProxyServer

    server = ProxyServer(cfg, tls)
    stop = _install_signal_handlers(server, cfg, tls, read_config)
    from .metrics import make_metrics_handler

    app = make_app(server, server.consensus, metrics_handler=make_metrics_handler(server))
    add_report_route(app, server.controller)
    if hasattr(server.consensus, "receive"):
        from raft.transport import add_raft_routes

        add_raft_routes(app, server.consensus, on_app=stream_payload_handler(server.controller))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.bind, cfg.admin_port, reuse_address=True, ssl_context=tls.admin_server)
    await site.start()
    await server.start()
    _resume_gc()
    if cfg.join:
        asyncio.get_running_loop().create_task(_join(cfg, tls))
    waits = [asyncio.get_running_loop().create_task(stop.wait())]
    # raft: this node must not take part (raft.cluster), or its storage failed (raft.node)
    fatal = getattr(server.consensus, "fatal", None)
    if fatal is not None:
        waits.append(fatal)
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    rc = 0
    if fatal is not None and fatal in done:
        from raft.storage import StorageError

        exc = fatal.result()
        if isinstance(exc, StorageError):
            log.error("exiting: Raft storage failed (%s); start this proxy again once its data dir is writable: "
                      "it resumes from what it had made durable", exc)
        else:
            log.error("cannot start: %s", exc)
        rc = 1
    else:
        log.info("shutting down: draining clients")
        await server.drain()
    waits[0].cancel()
    await server.stop()
    await runner.cleanup()
    return rc


async def _join(cfg, tls) -> None:
    """--join: ask the running cluster (via any member) to add this proxy (with `learner`: as
    a non-voting learner); retry until it did."""
    from .ops_cli import leader_call

    me = cfg.advertise_url or f"{cfg.admin_scheme}://{cfg.bind}:{cfg.admin_port}"
    body = {"node": cfg.node, "url": me, **({"learner": True} if cfg.learner else {})}
    loop = asyncio.get_running_loop()
    while True:
        try:
            status, doc = await loop.run_in_executor(
                None, leader_call, cfg.join, "POST", "/admin/members", body, cfg.raft_secret, 10.0, tls.admin_client)
            if status == 200:
                log.info("event=member_joined node=%s via=%s members=%s learners=%s", cfg.node, cfg.join,
                         doc.get("members"), doc.get("learners"))
                return
            log.warning("join via %s failed: HTTP %s %s; retrying", cfg.join, status, doc)
        except OSError as exc:
            log.warning("join via %s failed: %s; retrying", cfg.join, exc)
        await asyncio.sleep(1.0)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, flags=flags_from_args(args))
    except ConfigError as exc:
        print(f"redis-raft-proxy: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_format, cfg.log_level, cfg.node)
    from ..tls import TlsConfigError, tls_from_config

    try:
        tls = tls_from_config(cfg)
    except TlsConfigError as exc:
        print(f"redis-raft-proxy: {exc}", file=sys.stderr)
        return 2
    loop_name = _install_uvloop()
    log.info("event=starting node=%s loop=%s config=%s", cfg.node, loop_name, cfg.redacted())
    from raft.storage import StorageError

    try:
        return asyncio.run(_serve(cfg, tls, lambda: load_config(args.config, flags=flags_from_args(args))))
    except (OSError, StorageError) as exc:  # a port in use; a data dir that cannot be loaded
        log.error("cannot start: %s", exc)
        return 1


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from .demo import run_demo

    return run_demo(args, extra)


def cmd_create_cluster(args: argparse.Namespace) -> int:
    """Make cluster-enabled nodes one cluster (the Kubernetes Job of k8s/overlays/cluster)."""
    import os

    from .cluster_create import ClusterCreateError, create_cluster

    password = None
    path = args.password_file or os.environ.get("REDIS_RAFT_PROXY_REDIS_PASSWORD_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            print(f"redis-raft-proxy create-cluster: cannot read the password file: {exc}", file=sys.stderr)
            return 2
    else:
        password = os.environ.get("REDIS_RAFT_PROXY_REDIS_PASSWORD") or None
    masters = [a.strip() for a in args.masters.split(",") if a.strip()]
    replicas = [a.strip() for a in args.replicas.split(",") if a.strip()]
    try:
        ids = create_cluster(masters, replicas, client_kwargs={"password": password} if password else {},
                             timeout=args.timeout, log=lambda m: print(f"create-cluster: {m}", flush=True))
    except ClusterCreateError as exc:
        print(f"redis-raft-proxy create-cluster: {exc}", file=sys.stderr)
        return 1
    print(f"create-cluster: {len(masters)} shards, {len(ids)} nodes, cluster_state:ok", flush=True)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every problem of a configuration file (with the environment, as `run` reads it) at once."""
    problems = config_problems(args.file, env=None if args.env else {})
    for p in problems:
        print(f"{args.file}: {p}", file=sys.stderr)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{args.file}: ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .ops_cli import HELP, add_commands

    parser = argparse.ArgumentParser(prog="redis-raft-proxy", description=__doc__, formatter_class=HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one proxy", formatter_class=HELP)
    add_flags(run)
    check = sub.add_parser("check-config", help="validate a configuration file: every problem at once, exit 2 "
                           "if any", formatter_class=HELP)
    check.add_argument("file", help="the TOML file")
    check.add_argument("--no-env", dest="env", action="store_false",
                       help="ignore the REDIS_RAFT_PROXY_* environment (default: applied, as run does)")
    check.set_defaults(func=cmd_check_config)
    demo = sub.add_parser("demo", help="start a local cluster: 3 redis-server + 3 proxies on 127.0.0.1",
                          description="Extra flags (e.g. --read-policy master) are passed to every proxy.",
                          formatter_class=HELP)
    demo.add_argument("--proxy-port", type=int, default=6380, help="first proxy client port (default 6380)")
    demo.add_argument("--admin-port", type=int, default=8000, help="first proxy admin port (default 8000)")
    demo.add_argument("--redis-port", type=int, default=7000, help="first redis-server port (default 7000)")
    demo.add_argument("--sentinel-port", type=int, default=26379, help="first Sentinel-compatible port "
                      "(default 26379)")
    demo.add_argument("--dir", default=None, help="data directory (default: a new temp dir)")
    demo.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    demo.add_argument("--shards", type=int, default=0, help="cluster mode: N shards of a cluster-enabled Redis "
                      "(N masters + N replicas from --redis-port on, their bus ports after them) behind the "
                      "proxies (default: one replica set, no cluster)")
    demo.add_argument("--tls", action="store_true", help="TLS on every hop, with throwaway certificates made "
                      "in the data dir (tls/: CA, Redis, proxy and client certificates)")
    cc = sub.add_parser("create-cluster", help="make cluster-enabled Redis/Valkey nodes one cluster for cluster "
                        "mode (idempotent: a formed cluster is left as it is)", formatter_class=HELP)
    cc.add_argument("--masters", required=True, help="host:port,... one per shard; the slots are split evenly")
    cc.add_argument("--replicas", default="", help="host:port,...; replica i follows master "
                    "i // (replicas / masters)")
    cc.add_argument("--password-file", default=None, help="file holding the nodes' requirepass (default: "
                    "$REDIS_RAFT_PROXY_REDIS_PASSWORD_FILE, else $REDIS_RAFT_PROXY_REDIS_PASSWORD)")
    cc.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the nodes and each step "
                    "(default %(default)s)")
    cc.set_defaults(func=cmd_create_cluster)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        _pause_gc_for_startup()
        try:
            return cmd_run(build_parser().parse_args(argv))
        finally:
            _resume_gc()
    parser = build_parser()
    if argv and argv[0] == "demo":
        args, extra = parser.parse_known_args(argv)
        return cmd_demo(args, extra)
    args = parser.parse_args(argv)
    if hasattr(args, "func"):
        return _guarded(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _guarded(args: argparse.Namespace) -> int:
    """An operator command: whatever goes wrong is one line and a non-zero exit, never a
    traceback (the commands handle what they expect; this is the net under them)."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"redis-raft-proxy {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"redis-raft-proxy {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
