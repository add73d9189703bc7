"""The CLI's surface (issue 17): --version, --help with every default and the allowed
values, `check-config` reporting every problem at once, the history table."""

from __future__ import annotations

import argparse

import pytest

from proxy import __version__
from proxy.process.cli import build_parser, main
from proxy.process.config import config_problems
from proxy.process.ops_cli import one_line, render_history


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subparsers(sub, f"{prefix}{name} ")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"redis-raft-proxy {__version__}"


def test_every_option_of_every_command_shows_its_default_and_its_allowed_values():
    missing = []
    for name, sub in _subparsers(build_parser()):
        text = "".join(sub.format_help().split())     # (help is wrapped, at hyphens too)
        for action in sub._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS) or action.required \
                    or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            shown = "".join(action.help.split()).split("(default")[0]
            at = text.find(shown)
            if at < 0 or "(default" not in text[at:at + len(shown) + 400]:
                missing.append(f"{name} {action.option_strings[0]}")
            if action.choices and "{" + ",".join(map(str, action.choices)) + "}" not in text:
                missing.append(f"{name} {action.option_strings[0]} (choices)")
    assert not missing, f"options whose --help shows no default: {missing}"


def test_run_help_shows_the_built_in_defaults_not_none():
    run = dict(_subparsers(build_parser()))["run"]
    text = " ".join(run.format_help().split())
    assert "where reads go (default: 'replicas')" in text
    assert "{master,replicas,any}" in text and "(default: None)" not in text


def test_check_config_reports_every_problem_at_once(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('read_policy = "sometimes"\nport = "abc"\ndown_after_ms = -5\nbogus = 1\n'
                    'peers = ["proxy-1=http://127.0.0.1:8000"]\nmaster = "10.0.0.9:1"\n')
    keys = [p.key for p in config_problems(str(path), env={})]
    assert sorted(keys) == sorted(["port", "bogus", "read_policy", "down_after_ms", "master", "data_dir",
                                   "raft_secret"])
    assert main(["check-config", str(path), "--no-env"]) == 2
    err = capsys.readouterr().err
    assert "7 problem(s)" in err and "'read_policy': must be one of master, replicas, any" in err


def test_check_config_of_a_good_file_and_of_none(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('node = "proxy-1"\nread_policy = "master"\n')
    assert main(["check-config", str(good), "--no-env"]) == 0
    assert main(["check-config", str(tmp_path / "none.toml"), "--no-env"]) == 2
    assert "file not found" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("node = \n")
    assert main(["check-config", str(broken), "--no-env"]) == 2


def test_check_config_applies_the_environment_as_run_does(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('node = "proxy-1"\n')
    monkeypatch.setenv("REDIS_RAFT_PROXY_ACK", "never")
    assert main(["check-config", str(path)]) == 2
    assert main(["check-config", str(path), "--no-env"]) == 0


def test_history_table():
    records = [{"epoch": 2, "time": 1.0, "old_master": "127.0.0.1:7000", "new_master": "127.0.0.1:7001",
                "cause": "objectively_down", "held_ms": 812, "leader": "proxy-2"},
               {"epoch": 3, "time": 60.0, "old_master": "127.0.0.1:7001", "new_master": "127.0.0.1:7000",
                "cause": "manual", "held_ms": None, "leader": "proxy-1"}]
    lines = render_history(records).splitlines()
    assert lines[0].split() == ["EPOCH", "TIME", "(UTC)", "OLD", "MASTER", "NEW", "MASTER", "REASON", "HELD(ms)",
                                "LEADER"]
    assert lines[1].split() == ["2", "1970-01-01", "00:00:01Z", "127.0.0.1:7000", "127.0.0.1:7001", "objectively",
                                "down", "812", "proxy-2"]
    assert lines[2].split()[-3:] == ["manual", "-", "proxy-1"]
    assert "no failover" in render_history([])


def test_an_html_error_page_is_one_line():
    page = "<html>\n<body>\n  502 Bad Gateway\n</body></html>"
    assert one_line(page) == "<html> <body> 502 Bad Gateway </body></html>"
    assert len(one_line("x" * 1000)) < 310


def test_status_columns_fit_long_pod_names_and_addresses():
    from proxy.process.ops_cli import render

    long_node = "redis-raft-proxy-redis-2.redis-raft-proxy-redis.production.svc.cluster.local:6379"
    master = "redis-raft-proxy-redis-0.redis-raft-proxy-redis.production.svc.cluster.local:6379"
    names = ["redis-raft-proxy-0-a-very-long-statefulset-name", "redis-raft-proxy-1-a-very-long-statefulset-name"]

    def st(name: str, role: str) -> dict:
        return {"node": name, "raft": {"role": role, "term": 12, "leader": names[0]}, "lease": {"held": True},
                "topology": {"epoch": 7}, "clients": {"connected": 3}}
    first = {**st(names[0], "leader"), "failover": {},
             "topology": {"epoch": 7, "master": master, "replicas": [], "paused": None},
             "nodes": [{"addr": master, "role": "master", "up": True, "offset": 123456, "master": None},
                       {"addr": long_node, "role": "slave", "up": True, "offset": 123000, "master": master}]}
    lines = render(first, {names[0]: first, names[1]: st(names[1], "follower")}).splitlines()

    def columns_line_up(header: str, rows: list[str], column: str, values: list[str]) -> None:
        at = header.index(column)
        for row, value in zip(rows, values):
            assert row[at:at + len(value)] == value, f"{column!r} column misaligned:\n{header}\n{row}"

    node_head = next(i for i, ln in enumerate(lines) if ln.startswith("REDIS NODE"))
    columns_line_up(lines[node_head], lines[node_head + 1:node_head + 3], "ROLE", ["master", "slave"])
    proxy_head = next(i for i, ln in enumerate(lines) if ln.startswith("PROXY"))
    rows = lines[proxy_head + 1:proxy_head + 3]
    columns_line_up(lines[proxy_head], rows, "RAFT ROLE", ["leader", "follower"])
    columns_line_up(lines[proxy_head], rows, "LEADER", [names[0], names[0]])
    assert all(r.split()[0] in names for r in rows)


def test_status_shows_what_was_set_through_raft_and_the_tags():
    from proxy.process.ops_cli import _dynamic_config_lines

    doc = {"values": {"read_policy": {"value": "master", "source": "raft"}, "hold_ms": {"value": 5000,
                                                                                       "source": "file"}},
           "tags": {"127.0.0.1:7001": {"nofailover": True, "priority": 10}}}
    assert _dynamic_config_lines(doc) == ['set through Raft: read_policy="master"',
                                          "tags: 127.0.0.1:7001 nofailover=true priority=10"]
    assert _dynamic_config_lines({}) == []


def test_status_reads_every_proxy_through_the_one_endpoint_it_is_given():
    """As through one `kubectl port-forward`: the peers' own URLs do not answer from here,
    the contacted proxy's /status/cluster has them all."""
    import http.server
    import json
    import threading

    from proxy.process.ops_cli import gather

    def st(name: str) -> dict:
        return {"node": name, "raft": {"role": "follower", "leader": "p-1"}, "topology": {"epoch": 1},
                "peers": {"p-1": "http://127.0.0.1:1", "p-2": "http://127.0.0.1:1", "p-3": "http://127.0.0.1:1"}}
    docs = {"/status": st("p-1"), "/status/cluster": {"node": "p-1", "proxies": {n: st(n) for n in
                                                                                 ("p-1", "p-2", "p-3")}}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in docs:
                self.send_error(404)
                return
            body = json.dumps(docs[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        first, proxies = gather(f"http://127.0.0.1:{srv.server_address[1]}")
        assert first["node"] == "p-1" and sorted(n for n, d in proxies.items() if d) == ["p-1", "p-2", "p-3"]
        del docs["/status/cluster"]     # an older proxy: each peer's own URL (here unreachable)
        _, proxies = gather(f"http://127.0.0.1:{srv.server_address[1]}")
        assert proxies["p-1"] is not None and proxies["p-2"] is None and proxies["p-3"] is None
    finally:
        srv.shutdown()
