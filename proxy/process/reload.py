"""SIGHUP: read the configuration again and apply what can change while clients stay connected.

`plan_reload` is pure: it compares the running configuration with the one just read
and says which keys apply now and which need a restart. Only this proxy's own safe
keys apply (log level and format, `requirepass`, client limits); a TLS file's content
reloads by itself (proxy/tls.py's CertReloader; a SIGHUP checks at once), a new path
needs a restart like every other key (ports, `peers`, `data_dir`, ...). Connected
clients are never dropped: they keep the limits and the authentication they have, and
new connections get the new values.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import Config, ConfigError
from .logging_setup import setup_logging

log = logging.getLogger("proxy.reload")

# keys a SIGHUP applies to the running proxy (the *_file key is the source of its secret)
RELOADABLE = frozenset({
    "log_level", "log_format", "requirepass", "requirepass_file", "maxclients", "proto_max_bulk_len", "max_args",
    "client_output_buffer_limit", "client_output_buffer_soft_limit", "client_output_buffer_soft_seconds",
})


@dataclass(frozen=True)
class ReloadPlan:
    apply: dict[str, Any]           # key -> new value, to set on the running configuration
    need_restart: tuple[str, ...]   # keys whose new value takes effect only after a restart
    # the file's values of the cluster-wide keys (dynamic_config.DYNAMIC_KEYS): they apply
    # live where the dynamic configuration (Raft) sets nothing (config_live.LiveConfig.set_base)
    dynamic: dict[str, Any] = dataclasses.field(default_factory=dict)


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """What differs between `running` and `new`, split into what applies now and what not."""
    from .dynamic_config import DYNAMIC_KEYS

    apply, restart = {}, []
    dynamic = {k: getattr(new, k) for k in DYNAMIC_KEYS}
    for f in dataclasses.fields(Config):
        old_value, new_value = getattr(running, f.name), getattr(new, f.name)
        if old_value == new_value or f.name in DYNAMIC_KEYS:
            continue
        if f.name in RELOADABLE:
            apply[f.name] = new_value
        else:
            restart.append(f.name)
    return ReloadPlan(apply, tuple(restart), dynamic)


def reload_config(running: Config, read: Callable[[], Config], on_applied: Callable[[ReloadPlan], None]) -> None:
    """SIGHUP's handler: read the configuration, apply the safe changes to `running` (in
    place: every part of the proxy holds this object), log what was refused. A file
    that does not validate changes nothing."""
    try:
        new = read()
    except ConfigError as exc:
        log.error("event=config_reload_failed error=%r (the running configuration stays)", str(exc))
        return
    plan = plan_reload(running, new)
    for key, value in plan.apply.items():
        setattr(running, key, value)
    if plan.apply and ({"log_level", "log_format"} & plan.apply.keys()):
        setup_logging(running.log_format, running.log_level, running.node)
    if plan.need_restart:
        log.error("event=config_reload_refused keys=%s reason='these keys need a restart; the running values "
                  "stay'", ",".join(plan.need_restart))
    log.warning("event=config_reloaded applied=%s", ",".join(sorted(plan.apply)) or "none")   # names, never values
    on_applied(plan)
