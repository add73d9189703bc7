"""`redis-raft-proxy config show|set|unset|edit`: the dynamic configuration (issue 17).

The cluster-wide keys (proxy/process/dynamic_config.py) are set once for every proxy
through Raft. Each command talks to one proxy's admin port (`/admin/config`, with the
shared secret) and follows the Raft leader for changes.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile

from .config import ConfigError
from .dynamic_config import (
    DYNAMIC_KEYS,
    edit_change,
    from_toml,
    settable_text,
    tag_key,
    to_toml,
    validate_change,
)
from .ops_cli import (
    _operator,
    _report,
    _secret,
    _ssl_context,
    http,
    leader_call,
    one_line,
)


def _current(args) -> dict | None:
    """The contacted proxy's /admin/config, or None (said on stderr)."""
    status, doc = http("GET", args.endpoint.rstrip("/") + "/admin/config", secret=_secret(args), timeout=5.0,
                       ssl_context=_ssl_context(args))
    if status == 200 and isinstance(doc, dict) and isinstance(doc.get("values"), dict):
        return doc
    if status == 0:
        print(f"redis-raft-proxy config: {doc['error']}", file=sys.stderr)
    else:
        err = doc.get("error") if isinstance(doc, dict) else doc
        print(f"redis-raft-proxy config: {args.endpoint} answered HTTP {status} on /admin/config: "
              f"{one_line(err, 200)}", file=sys.stderr)
    return None


def render_config(doc: dict) -> str:
    """The table `config show` prints: each key, its value and where it comes from."""
    rows = [(k, json.dumps(v["value"]), v["source"]) for k, v in doc["values"].items()]
    for addr, tags in sorted((doc.get("tags") or {}).items()):
        rows += [(tag_key(addr, t), json.dumps(v), "raft") for t, v in sorted(tags.items())]
    w0 = max(len("KEY"), *(len(r[0]) for r in rows))
    w1 = max(len("VALUE"), *(len(r[1]) for r in rows))
    lines = [f"{'KEY':<{w0}}  {'VALUE':<{w1}}  SOURCE"]
    lines += [f"{k:<{w0}}  {v:<{w1}}  {s}" for k, v, s in rows]
    return "\n".join(lines)


def cmd_config_show(args) -> int:
    doc = _current(args)
    if doc is None:
        return 1
    print(json.dumps({k: doc[k] for k in ("node", "values", "tags", "overrides")}, indent=2) if args.json
          else render_config(doc))
    return 0


def _change(args, set_: dict, unset: list) -> int:
    body = {"set": set_, "unset": unset, "by": args.by or _operator()}
    status, doc = leader_call(args.endpoint, "POST", "/admin/config", body, _secret(args), 10.0, _ssl_context(args))
    return _report(status, doc, "{message}")


def cmd_config_set(args) -> int:
    _, errors = validate_change({}, {args.key: args.value})
    if errors:      # the proxy checks again; saying it here saves a round trip and needs no endpoint
        print(f"config set: {errors[0]}", file=sys.stderr)
        return 2
    return _change(args, {args.key: args.value}, [])


def cmd_config_unset(args) -> int:
    _, errors = validate_change({}, {}, [args.key])
    if errors:
        print(f"config unset: {errors[0]}", file=sys.stderr)
        return 2
    return _change(args, {}, [args.key])


def cmd_config_edit(args) -> int:
    doc = _current(args)
    if doc is None:
        return 1
    values = {k: (v["value"], v["source"]) for k, v in doc["values"].items()}
    text = to_toml(values, doc.get("tags") or {})
    before = from_toml(text)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".toml", prefix="redis-raft-proxy-config-", delete=False) as fh:
        fh.write(text)
        path = fh.name
    try:
        try:
            rc = subprocess.call([*shlex.split(editor), path])
        except OSError as exc:
            print(f"config edit: cannot run the editor {editor!r}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if rc != 0:
            print(f"config edit: the editor exited with status {rc}; nothing applied", file=sys.stderr)
            return 1
        with open(path, encoding="utf-8") as fh:
            edited = fh.read()
    finally:
        os.unlink(path)
    try:
        after = from_toml(edited)
    except ConfigError as exc:
        print(f"config edit: {exc}; nothing applied", file=sys.stderr)
        return 2
    set_, unset = edit_change(before, after, doc.get("overrides") or {})
    _, errors = validate_change(doc.get("overrides") or {}, set_, unset)
    if errors:
        print("config edit: " + "; ".join(str(e) for e in errors) + "; nothing applied", file=sys.stderr)
        return 2
    if not set_ and not unset:
        print("no change")
        return 0
    return _change(args, set_, unset)


def add_config_commands(sub, common) -> None:
    from .ops_cli import HELP

    p = sub.add_parser("config", help="the cluster-wide settings, set once for every proxy through Raft "
                       f"({', '.join(DYNAMIC_KEYS)}, node tags)", formatter_class=HELP)
    csub = p.add_subparsers(dest="config_command", required=True, metavar="{show,set,unset,edit}")
    s = csub.add_parser("show", help="each cluster-wide key's value and where it comes from (raft, file, env, "
                        "flag, default), and the node tags", formatter_class=HELP)
    common(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_config_show)
    s = csub.add_parser("set", help="set a key for every proxy; it wins over each proxy's file",
                        formatter_class=HELP, description=f"The keys that can be set: {settable_text()}.")
    common(s)
    s.add_argument("key", help="e.g. read_policy, or tags.127.0.0.1:7001.nofailover")
    s.add_argument("value", help="as in the configuration file, e.g. master, 500, true, 1mb")
    s.add_argument("--by", default=None, help="who sets it, for the record (default: user@host)")
    s.set_defaults(func=cmd_config_set)
    s = csub.add_parser("unset", help="remove a key set through Raft: each proxy's own value applies again",
                        formatter_class=HELP)
    common(s)
    s.add_argument("key")
    s.add_argument("--by", default=None, help="who unsets it, for the record (default: user@host)")
    s.set_defaults(func=cmd_config_unset)
    s = csub.add_parser("edit", help="open $EDITOR on the current values as TOML; validate, then apply the "
                        "changes (nothing on error)", formatter_class=HELP)
    common(s)
    s.add_argument("--by", default=None, help="who edits, for the record (default: user@host)")
    s.set_defaults(func=cmd_config_edit)
