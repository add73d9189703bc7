"""Dynamic configuration through Raft (issue 17): the cluster-wide keys every proxy must
share, set once for all with `redis-raft-proxy config set/unset/edit`.

The replicated state keeps a flat map of overrides, key -> value: the keys of
`DYNAMIC_KEYS` and node tags as `tags.HOST:PORT.TAG` (e.g. `tags.127.0.0.1:7001.nofailover`).
A value set through Raft wins over the proxy's own file, environment and flags.
Everything here is pure: validation (with the start-up's messages), the merge of a
change into the map, the effective values with their sources, and the TOML that
`config edit` shows and reads back.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from health.shard.decide import NodeTags

from .config import _PARSERS, ConfigError, _coerce, parse_addr, value_problems

# the keys every proxy must share (each proxy applies a change live: see config_live.py)
DYNAMIC_KEYS = ("down_after_ms", "probe_interval_ms", "hold_ms", "ack", "read_policy", "read_your_writes",
                "max_replica_staleness_ms")
TAG_PREFIX = "tags."
TAG_KINDS = {"nofailover": "bool", "priority": "int", "noloadbalance": "bool", "max_lag_on_failover": "size"}


def settable_text() -> str:
    """The keys `config set` accepts, for error messages and --help."""
    return (", ".join(DYNAMIC_KEYS) + ", and node tags tags.HOST:PORT.TAG with TAG one of "
            + ", ".join(TAG_KINDS))


def split_tag_key(key: str) -> tuple[str, str] | None:
    """`tags.127.0.0.1:7001.nofailover` -> ("127.0.0.1:7001", "nofailover"); None: not a tag key."""
    if not key.startswith(TAG_PREFIX):
        return None
    addr, _, tag = key[len(TAG_PREFIX):].rpartition(".")
    return addr, tag


def tag_key(addr: str, tag: str) -> str:
    return f"{TAG_PREFIX}{addr}.{tag}"


def parse_override(key: str, raw: Any) -> Any:
    """The value `raw` (a string from the command line, or a TOML/JSON value) parsed and
    checked as at start-up; ConfigError naming the key when it is wrong or not settable."""
    if key in DYNAMIC_KEYS:
        value = _coerce(key, raw)
        for problem in value_problems(key, value):
            raise problem
        return value
    tag = split_tag_key(key)
    if tag is None:
        raise ConfigError(key, f"cannot be set through Raft (a proxy's own key: set it in its file). The keys "
                          f"that can be set: {settable_text()}")
    addr, name = tag
    try:
        parse_addr(addr)
    except ValueError:
        raise ConfigError(key, f"expected tags.HOST:PORT.TAG, {addr!r} is not a Redis node address") from None
    if name not in TAG_KINDS:
        raise ConfigError(key, f"unknown tag {name!r}; the tags: {', '.join(TAG_KINDS)}")
    try:
        value = _PARSERS[TAG_KINDS[name]](raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, str(exc)) from None
    if TAG_KINDS[name] != "bool" and value < 0:
        raise ConfigError(key, f"must be >= 0, got {value!r}")
    return value


def validate_change(current: Mapping[str, Any], set_: Mapping[str, Any], unset: Iterable[str] = (),
                    replace: bool = False) -> tuple[dict[str, Any], list[ConfigError]]:
    """The override map after a change (`replace`: `set_` is the whole new map), and every
    problem of the change; with any problem, nothing may be applied."""
    new: dict[str, Any] = {} if replace else dict(current)
    errors: list[ConfigError] = []
    for key in unset:
        if key not in DYNAMIC_KEYS and split_tag_key(key) is None:
            errors.append(ConfigError(key, f"cannot be set through Raft. The keys that can be set: {settable_text()}"))
        new.pop(key, None)
    parsed, bad = valid_overrides(set_)
    new.update(parsed)
    return new, errors + bad


def valid_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[ConfigError]]:
    """The overrides this proxy can use, and the ones it cannot (set by a newer version)."""
    good, bad = {}, []
    for key, raw in overrides.items():
        try:
            good[key] = parse_override(key, raw)
        except ConfigError as exc:
            bad.append(exc)
    return good, bad


def effective(base: Mapping[str, Any], sources: Mapping[str, str],
              overrides: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """key -> (value, source) for each dynamic key: source is raft, file, env, flag or default."""
    good, _ = valid_overrides(overrides)
    return {k: (good[k], "raft") if k in good else (base[k], sources.get(k, "default")) for k in DYNAMIC_KEYS}


def node_tags(overrides: Mapping[str, Any]) -> dict[str, NodeTags]:
    """Each tagged node's tags."""
    good, _ = valid_overrides(overrides)
    per: dict[str, dict[str, Any]] = {}
    for key, value in good.items():
        tag = split_tag_key(key)
        if tag is not None:
            per.setdefault(tag[0], {})[tag[1]] = value
    return {addr: NodeTags(**t) for addr, t in per.items()}


def tags_doc(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """node -> {tag: value}, as /status and `config show` print them."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in valid_overrides(overrides)[0].items():
        tag = split_tag_key(key)
        if tag is not None:
            out.setdefault(tag[0], {})[tag[1]] = value
    return out


# ---------------------------------------------------------------------------
# config edit: TOML out, TOML in
# ---------------------------------------------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(values: Mapping[str, tuple[Any, str]], tags: Mapping[str, Mapping[str, Any]]) -> str:
    """The text `config edit` opens: every dynamic key with its source, then the tags."""
    lines = ["# redis-raft-proxy config edit: the cluster-wide settings, applied to every proxy through Raft.",
             "# Change a value to set it for all; delete a line to go back to each proxy's own file.",
             f"# Tags: [tags.\"HOST:PORT\"] tables with {', '.join(TAG_KINDS)}.", ""]
    for key in DYNAMIC_KEYS:
        value, source = values[key]
        lines.append(f"{key} = {_toml_value(value)}    # from {source}")
    for addr in sorted(tags):
        lines += ["", f'[tags."{addr}"]']
        lines += [f"{t} = {_toml_value(v)}" for t, v in sorted(tags[addr].items())]
    return "\n".join(lines) + "\n"


def from_toml(text: str) -> dict[str, Any]:
    """The flat key -> value map of an edited text; ConfigError when it is not TOML or
    `tags` is not a table of tables."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    tags = doc.pop("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(t, dict) for t in tags.values()):
        raise ConfigError("tags", 'expected tables like [tags."127.0.0.1:7001"]')
    for addr, t in tags.items():
        flat.update({tag_key(addr, name): v for name, v in t.items()})
    flat.update(doc)
    return flat


def edit_change(before: Mapping[str, Any], after: Mapping[str, Any],
                raft_keys: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """What an edit asks for: (keys to set, keys to unset). A value changed is set; a line
    deleted unsets a key set through Raft (back to each proxy's own value)."""
    set_ = {k: v for k, v in after.items() if k not in before or before[k] != v}
    unset = [k for k in raft_keys if k not in after]
    return set_, unset
