"""CLIENT LIST/INFO/ID/KILL/PAUSE/NO-EVICT, MONITOR, ACL LOG/WHOAMI, PING while the master is
busy and DEBUG, answered for the proxy's own clients (issue 19).

Two proxies over one replica set: `proxy` (no password) and `locked` (requirepass); a CLIENT
KILL or CLIENT PAUSE on one of them never touches the other's clients.  The Redis nodes run
with `enable-debug-command local` so that the DEBUG subcommands that pass through can run.
"""

from __future__ import annotations

import threading
import time

import hiredis
import pytest
import redis

from .harness import ReplicaSet, encode_command, redis_client, wait_until
from .test_sessions import uniq

PASSWORD = "proxy-secret-19"
RESP = pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])


@pytest.fixture(scope="module")
def replica_set(tmp_path_factory):
    rs = ReplicaSet(tmp_path_factory.mktemp("rs"))
    for s in rs.servers:
        s.extra_args += ["--enable-debug-command", "local"]
    try:
        rs.start()
        yield rs
    finally:
        rs.cleanup()


@pytest.fixture(scope="module")
def locked(replica_set, module_proxy_factory):
    return module_proxy_factory(replica_set, node="locked", down_after_ms=10_000, requirepass=PASSWORD)


def one(port: int, protocol: int = 2, **kw) -> redis.Redis:
    """One redis-py connection (so its address is known)."""
    return redis_client(port, protocol=protocol, decode=True, single_connection_client=True, **kw)


def monitor_until(mon, done, timeout: float = 10.0) -> list:
    """MONITOR lines read until `done(lines)`; fails after `timeout` seconds however many
    other lines keep coming."""
    lines: list = []
    deadline = time.monotonic() + timeout
    while not done(lines):
        assert time.monotonic() < deadline, f"MONITOR: no marker within {timeout} s; last lines {lines[-5:]}"
        lines.append(mon.read_reply())
    return lines


def addr_of(r: redis.Redis) -> str:
    r.ping()
    host, port = r.connection._sock.getsockname()[:2]
    return f"{host}:{port}"


def by_addr(clients: list[dict]) -> dict[str, dict]:
    return {c["addr"]: c for c in clients}


def master_names(rs: ReplicaSet) -> list[str]:
    with rs.master.client(decode=True, timeout=5) as m:
        return [c["name"] for c in m.client_list()]


# -- CLIENT LIST / INFO / ID ----------------------------------------------------------------------
@RESP
def test_client_list_and_info_describe_this_proxys_clients_in_redis_format(proxy, locked, replica_set, protocol):
    a, b = one(proxy.port, protocol), one(proxy.port, protocol)
    other = one(locked.port, protocol, password=PASSWORD)
    sub = redis_client(proxy.port, protocol=protocol, decode=True)
    ps = sub.pubsub()
    try:
        a.client_setname("lister")
        a.select(2)
        a_addr, b_addr, other_addr = addr_of(a), addr_of(b), addr_of(other)
        b.set(uniq("k"), "v")
        ps.subscribe(uniq("ch"), uniq("ch"))
        ps.psubscribe(uniq("p") + "*")
        wait_until(lambda: any(c["flags"] == "P" for c in a.client_list()), 5, message="the subscriber listed")
        listed = by_addr(a.client_list())
        me = listed[a_addr]
        assert a.client_id() == int(me["id"])
        hello = a.execute_command("HELLO", protocol)
        hello = hello if isinstance(hello, dict) else dict(zip(hello[::2], hello[1::2]))
        assert hello["id"] == a.client_id(), "HELLO names another id than CLIENT ID"
        assert me["laddr"] == proxy.addr and me["name"] == "lister" and me["db"] == "2"
        assert me["cmd"] == "client|list" and me["user"] == "default" and me["resp"] == str(protocol)
        assert me["flags"] == "N" and me["multi"] == "-1" and me["sub"] == "0"
        assert me["lib-name"] == "redis-py", me          # from redis-py's CLIENT SETINFO
        assert int(me["fd"]) > 0 and int(me["age"]) >= 0 and int(me["idle"]) >= 0
        assert listed[b_addr]["cmd"] == "set", listed[b_addr]
        subscriber = next(c for c in listed.values() if c["flags"] == "P")
        assert (subscriber["sub"], subscriber["psub"], subscriber["ssub"]) == ("2", "1", "0")
        assert other_addr not in listed, "a client of another proxy is listed"
        # the same fields, in the same order, as the master's own CLIENT LIST (redis-py adds lib-*)
        with replica_set.master.client(decode=True, timeout=5) as m:
            redis_fields = [kv.split("=", 1)[0] for kv in m.execute_command("CLIENT", "INFO").split()]
        info = a.execute_command("CLIENT", "INFO")
        info_fields = [kv.split("=", 1)[0] for kv in str(info).split()]
        assert [f for f in info_fields if not f.startswith("lib-")] == redis_fields
        assert a.client_info()["addr"] == a_addr and a.client_info()["cmd"] == "client|info"
        assert [c["addr"] for c in a.client_list(_type="pubsub")] == [subscriber["addr"]]
        assert [c["addr"] for c in a.client_list(client_id=[int(listed[b_addr]["id"])])] == [b_addr]
        with pytest.raises(redis.ResponseError, match="Unknown client type"):
            a.execute_command("CLIENT", "LIST", "TYPE", "nonsense")
        # MULTI shows as Redis shows it
        with b.pipeline(transaction=True) as p:
            b.execute_command("MULTI")
            b.execute_command("GET", "x")
            b.execute_command("GET", "y")
            row = by_addr(a.client_list())[b_addr]
            assert (row["flags"], row["multi"]) == ("x", "2"), row
            b.execute_command("DISCARD")
            del p
        # CLIENT NO-EVICT is kept and shown
        assert a.execute_command("CLIENT", "NO-EVICT", "on") in (True, "OK")
        assert "e" in a.client_info()["flags"]
        with pytest.raises(redis.ResponseError, match="syntax error"):
            a.execute_command("CLIENT", "NO-EVICT", "maybe")
        # CLIENT NO-TOUCH: the master decides (Redis 7.2+); the flag shows only once it accepted
        try:
            touched = a.execute_command("CLIENT", "NO-TOUCH", "on") in (True, "OK")
        except redis.ResponseError as exc:
            assert "no-touch" in str(exc).lower(), exc      # Redis 7.0: its own unknown-subcommand error
            touched = False
        assert ("T" in a.client_info()["flags"]) == touched
    finally:
        ps.close()
        for c in (a, b, other, sub):
            c.close()


# -- CLIENT KILL ---------------------------------------------------------------------------------------
@RESP
def test_client_kill_filters_act_on_this_proxys_clients_only(proxy, locked, protocol):
    killer = one(proxy.port, protocol)
    victims = [one(proxy.port, protocol) for _ in range(4)]
    far = one(locked.port, protocol, password=PASSWORD)
    try:
        addrs = [addr_of(v) for v in victims]
        addr_of(far)
        ids = [v.client_id() for v in victims]

        def alive(r: redis.Redis) -> bool:
            try:
                return r.ping()
            except redis.ConnectionError:
                return False
        assert killer.execute_command("CLIENT", "KILL", "ID", ids[0]) == 1
        assert killer.execute_command("CLIENT", "KILL", "ADDR", addrs[1], "SKIPME", "yes") == 1
        assert killer.execute_command("CLIENT", "KILL", addrs[2]) in (True, "OK")     # the old form
        with pytest.raises(redis.ResponseError, match="No such client"):
            killer.execute_command("CLIENT", "KILL", addrs[2])
        assert [alive(v) for v in victims[:3]] == [False] * 3
        assert alive(victims[3]) and alive(far)
        # USER, MAXAGE, LADDR and TYPE with SKIPME yes (the default): every other client here, none elsewhere
        assert killer.execute_command("CLIENT", "KILL", "USER", "nobody-such") == 0
        assert killer.execute_command("CLIENT", "KILL", "MAXAGE", 1000) == 0
        assert killer.execute_command("CLIENT", "KILL", "TYPE", "master") == 0
        assert killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "LADDR", proxy.addr, "USER", "default",
                                      "ID", ids[3]) == 1
        assert not alive(victims[3])
        assert alive(far), "CLIENT KILL on one proxy closed a client of another proxy"
        assert alive(killer)
        for bad, why in ((["ID", "abc"], "client-id should be greater than 0"),
                         (["TYPE", "foo"], "Unknown client type"), (["SKIPME", "maybe"], "syntax error"),
                         (["ID", "1", "SKIPME"], "syntax error"), (["MAXAGE", "0"], "maxage should be greater than 0")):
            with pytest.raises(redis.ResponseError, match=why):
                killer.execute_command("CLIENT", "KILL", *bad)
        # SKIPME no: the caller itself, once the reply is out
        me = killer.client_id()
        assert killer.execute_command("CLIENT", "KILL", "ID", me, "SKIPME", "no") == 1
        assert not alive(killer)
    finally:
        for c in (killer, *victims, far):
            c.close()


def test_client_kill_in_any_mode_frees_its_upstream_state(proxy, replica_set):
    """A client blocked in BLPOP, one subscribed, one in MULTI: killed, each one's own connection
    to the master goes too, and nothing owed to them reaches anyone else."""
    key, ch = uniq("blk"), uniq("ch")
    killer = one(proxy.port)
    blocked, subscribed, in_multi = proxy.raw(), proxy.raw(), proxy.raw()
    names = {c: uniq("victim") for c in (blocked, subscribed, in_multi)}
    try:
        for c, name in names.items():
            assert c.command("CLIENT", "SETNAME", name) == b"OK"
        ids = {c: c.command("CLIENT", "ID") for c in names}
        blocked.send(encode_command("BLPOP", key, "0"))
        assert subscribed.command("SUBSCRIBE", ch)[0] == b"subscribe"
        assert in_multi.command("MULTI") == b"OK"
        assert in_multi.command("SET", key + "-tx", "1") == b"QUEUED"
        wait_until(lambda: set(names.values()) <= set(master_names(replica_set)), 5,
                   message="each victim's own connection on the master")
        rows = by_addr(killer.client_list())
        flags = {r["name"]: r["flags"] for r in rows.values()}
        assert (flags[names[blocked]], flags[names[subscribed]], flags[names[in_multi]]) == ("b", "P", "x")
        for c in names:
            assert killer.execute_command("CLIENT", "KILL", "ID", ids[c]) == 1
        for c in names:
            assert c.read_until_closed(5) is not None
        wait_until(lambda: not set(names.values()) & set(master_names(replica_set)), 5,
                   message="the victims' upstream connections closed on the master")
        # the killed BLPOP does not take the element, the killed MULTI never ran
        killer.lpush(key, "v")
        assert killer.lpop(key) == "v"
        assert killer.exists(key + "-tx") == 0
        assert killer.publish(ch, "x") == 0
    finally:
        for c in (killer, blocked, subscribed, in_multi):
            c.close()


# -- CLIENT PAUSE ------------------------------------------------------------------------------------
def no_reply_within(c, seconds: float) -> bool:
    c.sock.settimeout(seconds)
    try:
        c.read_reply()
        return False
    except OSError:
        return True
    finally:
        c.sock.settimeout(10)


def test_client_pause_write_and_all_pause_this_proxys_clients_only(proxy, locked, replica_set):
    k = uniq("pause")
    admin = one(proxy.port)
    writer, reader = proxy.raw(), proxy.raw()
    far = one(locked.port, password=PASSWORD)
    try:
        assert admin.execute_command("CLIENT", "PAUSE", 20_000, "WRITE") in (True, "OK")
        writer.send(encode_command("SET", k, "1"))
        assert reader.command("GET", k) is None                 # reads go on
        assert no_reply_within(writer, 0.3), "a write was not paused"
        assert far.set(k + "-far", "1") is True                 # another proxy's clients are not paused
        with replica_set.master.client(timeout=5) as m:
            assert m.set(k + "-direct", "1") is True            # nor is the master
        assert admin.execute_command("CLIENT", "UNPAUSE") in (True, "OK")
        assert writer.read_reply() == b"OK"
        # ALL: reads too, until the timeout (the reader wrote nothing: its GET may go to a
        # replica, which must have the key first)
        replica_set.wait_synced()
        t0 = time.monotonic()
        assert admin.execute_command("CLIENT", "PAUSE", 300, "ALL") in (True, "OK")
        assert reader.command("GET", k) == b"1"
        assert time.monotonic() - t0 >= 0.25, "a read was not paused by PAUSE ALL"
        for bad, why in ((["abc"], "timeout is not an integer"), (["-1"], "timeout is negative"),
                         (["10", "foo"], "mode must be WRITE or ALL")):
            with pytest.raises(redis.ResponseError, match=why):
                admin.execute_command("CLIENT", "PAUSE", *bad)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        for c in (admin, writer, reader, far):
            c.close()


# -- MONITOR -----------------------------------------------------------------------------------------
@RESP
def test_monitor_shows_every_command_with_the_real_client_address(proxy, locked, protocol):
    mon = proxy.raw()
    r = one(proxy.port, protocol)
    far = one(locked.port, password=PASSWORD)
    k = uniq("mon")
    try:
        assert mon.command("MONITOR") == b"OK"
        addr = addr_of(r)
        r.execute_command("CLIENT", "SETNAME", "watched")
        r.set(k, "a b\"c")
        r.get(k)
        r.client_list()                         # admin: not shown, as in Redis
        r.eval("return 1", 0)                  # EVAL is shown although skip_monitor, as in Redis
        r.execute_command("ECHO", "done")
        far.set(k, "elsewhere")                 # another proxy's client: not shown here
        lines = monitor_until(mon, lambda lines: any(b'"ECHO" "done"' in ln or b'"echo" "done"' in ln
                                                     for ln in lines))
        mine = [ln.decode() for ln in lines if f"[0 {addr}]".encode() in ln]
        text = "\n".join(mine)
        for expected in ('"PING"', '"CLIENT" "SETNAME" "watched"', f'"SET" "{k}" "a b\\"c"', f'"GET" "{k}"',
                         '"EVAL" "return 1" "0"'):
            assert expected.lower() in text.lower(), f"{expected} missing from MONITOR: {text}"
        assert "LIST" not in text.upper()
        assert not any(b"elsewhere" in ln for ln in lines)
        assert all(ln[:10].isdigit() for ln in mine)
    finally:
        for c in (mon, r, far):
            c.close()


def test_monitor_redacts_secrets_and_skips_commands_refused_before_auth(locked):
    with locked.raw() as mon, locked.raw() as c:
        assert mon.command("AUTH", PASSWORD) == b"OK"
        assert mon.command("MONITOR") == b"OK"
        k = uniq("noauth")
        assert str(c.command("GET", k)).startswith("NOAUTH")
        assert str(c.command("AUTH", "wrong-pw")).startswith("WRONGPASS")
        assert c.command("AUTH", PASSWORD) == b"OK"
        assert isinstance(c.command("HELLO", "2", "AUTH", "default", PASSWORD), list)
        assert c.command("ECHO", "end") == b"end"
        lines = monitor_until(mon, lambda lines: bool(lines) and b'"end"' in lines[-1])
        text = b"\n".join(lines)
        assert k.encode() not in text, "a command refused with NOAUTH appeared in MONITOR"
        assert PASSWORD.encode() not in text and b"wrong-pw" not in text, "a password reached MONITOR"
        assert sum(ln.endswith(b'] "AUTH" "(redacted)"') for ln in lines) == 2, lines
        assert any(ln.endswith(b'"HELLO" "2" "AUTH" "(redacted)" "(redacted)"') for ln in lines), lines


# -- ACL LOG, ACL WHOAMI -----------------------------------------------------------------------------
@RESP
def test_acl_log_has_the_proxys_own_auth_failures_and_the_masters(locked, replica_set, protocol):
    with one(locked.port, protocol, password=PASSWORD) as admin:
        admin.acl_log_reset()
        with replica_set.master.client(timeout=5) as m:
            m.acl_log_reset()
        with locked.raw() as bad:
            bad_addr = "%s:%d" % bad.sock.getsockname()[:2]
            for cmd in (["AUTH", "wrong"], ["HELLO", "3", "AUTH", "default", "wrong-too"],
                        ["AUTH", "wrong"]):                 # grouped with the first: count 2
                assert str(bad.command(*cmd)).startswith("WRONGPASS")
            # not the proxy's user: Redis' own ACLs decide, and log
            assert str(bad.command("AUTH", "no-such-user", "x")).startswith("WRONGPASS")
        log = admin.acl_log()
        def addr(e) -> str:     # (redis-py parses client-info into a dict in RESP2 only)
            info = e["client-info"]
            return info["addr"] if isinstance(info, dict) else dict(kv.split("=", 1) for kv in info.split())["addr"]
        mine = [e for e in log if addr(e) == bad_addr]
        assert [(e["object"], e["count"], e["username"], e["reason"], e["context"]) for e in mine] == \
            [("auth", 2, "default", "auth", "toplevel"), ("hello", 1, "default", "auth", "toplevel")], (bad_addr, log)
        assert any(e["username"] == "no-such-user" for e in log), f"the master's entry is missing: {log}"
        assert all(isinstance(e["age-seconds"], float) for e in log)
        assert len(admin.acl_log(count=1)) == 1
        assert admin.acl_log_reset() in (True, "OK")
        assert admin.acl_log() == []
        assert admin.acl_whoami() == "default"


def test_acl_whoami_client_list_user_and_the_users_admin_rights(proxy, replica_set):
    """ACL WHOAMI and CLIENT LIST's user= name the user the client authenticated as; the admin
    commands the proxy answers itself need that user's right to run them on Redis."""
    user, limited, pw = uniq("u"), uniq("limited"), "pw-19"
    for s in replica_set.servers:
        with s.client(timeout=5) as c:
            c.acl_setuser(user, enabled=True, passwords=["+" + pw], keys=["*"], channels=["*"], commands=["+@all"])
            c.acl_setuser(limited, enabled=True, passwords=["+" + pw], keys=["*"], channels=["*"],
                          commands=["+@all", "-@admin", "-@dangerous"])
    try:
        with one(proxy.port) as r, one(proxy.port) as weak:
            assert r.acl_whoami() == "default"
            r.auth(pw, user)
            assert r.acl_whoami() == user
            assert r.client_info()["user"] == user
            assert any(c["user"] == user for c in r.client_list())
            weak.auth(pw, limited)
            for cmd in (["CLIENT", "LIST"], ["CLIENT", "KILL", "USER", user], ["CLIENT", "PAUSE", "10000"],
                        ["CLIENT", "UNPAUSE"], ["CLIENT", "NO-EVICT", "on"], ["MONITOR"]):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    weak.execute_command(*cmd)
            # inside MULTI the rights are checked when queued, as Redis does: EXEC then aborts
            assert weak.execute_command("MULTI") in (True, "OK")
            with pytest.raises(redis.exceptions.NoPermissionError):
                weak.execute_command("CLIENT", "KILL", "USER", user)
            with pytest.raises(redis.exceptions.ExecAbortError):
                weak.execute_command("EXEC")
            assert weak.client_info()["user"] == limited and weak.set(uniq("k"), "1") is True
            assert r.ping()
    finally:
        for s in replica_set.servers:
            with s.client(timeout=5) as c:
                c.acl_deluser(user, limited)


# -- PING while the master is busy ----------------------------------------------------------------------
SLOW_SCRIPT = "local t = redis.call('TIME')[1] while redis.call('TIME')[1] - t < 2 do end return 1"


def test_ping_answers_busy_while_the_master_runs_a_long_script(proxy, replica_set):
    with replica_set.master.client(timeout=5) as m:
        old = m.config_get("busy-reply-threshold")["busy-reply-threshold"]
        m.config_set("busy-reply-threshold", 100)
    done = threading.Event()

    def run():
        try:
            with replica_set.master.client(timeout=10) as m:
                m.eval(SLOW_SCRIPT, 0)
        finally:
            done.set()
    threading.Thread(target=run, daemon=True).start()
    try:
        with proxy.raw() as c:
            def busy():
                reply = c.command("PING")
                return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("BUSY")
            wait_until(busy, 5, interval=0.02, message="PING through the proxy answering -BUSY")
            assert done.wait(10)
            wait_until(lambda: c.command("PING") == b"PONG", 5, message="PONG once the script ended")
    finally:
        done.wait(10)
        with replica_set.master.client(timeout=5) as m:
            m.config_set("busy-reply-threshold", old)


# -- DEBUG --------------------------------------------------------------------------------------------
@RESP
def test_debug_passes_the_harmless_subcommands_and_refuses_the_rest(proxy, protocol):
    k = uniq("dbg")
    with one(proxy.port, protocol) as r:
        r.set(k, "v")
        with pytest.raises(redis.ResponseError, match="^boom$"):
            r.execute_command("DEBUG", "ERROR", "boom")
        assert r.execute_command("DEBUG", "SLEEP", "0") in (True, "OK")
        assert "encoding" in str(r.execute_command("DEBUG", "OBJECT", k))
        for cmd in (["SLEEP", "1"], ["RELOAD"], ["SET-ACTIVE-EXPIRE", "0"], ["SEGFAULT"]):
            with pytest.raises(redis.ResponseError, match=f"proxy: DEBUG {cmd[0]}.*not allowed"):
                r.execute_command("DEBUG", *cmd)
        assert r.get(k) == "v"


# -- CLIENT inside MULTI, MONITOR of a transaction, CLIENT on a subscribed RESP3 connection -----------
def hello_id(c, protocol: int) -> int:
    """HELLO `protocol` on the raw connection `c`: its client id."""
    hello = c.command("HELLO", str(protocol))
    return hello[b"id"] if isinstance(hello, dict) else dict(zip(hello[::2], hello[1::2]))[b"id"]


def fields(line: bytes | str) -> dict[str, str]:
    text = line.decode() if isinstance(line, bytes) else line
    return dict(kv.split("=", 1) for kv in text.split())


@RESP
def test_client_commands_inside_multi_are_answered_for_this_client_at_exec(proxy, protocol):
    """Redis queues CLIENT ID/INFO/LIST/SETNAME/GETNAME/KILL inside MULTI and answers them at EXEC,
    for the client itself: the proxy's answers (never those of its upstream connection) take
    their places in EXEC's reply."""
    a, victim = proxy.raw(), one(proxy.port, protocol)
    k = uniq("txc")
    try:
        my_id, victim_id = hello_id(a, protocol), victim.client_id()
        victim_addr = addr_of(victim)
        assert a.command("MULTI") == b"OK"
        queue = [("SET", k, "v"), ("CLIENT", "ID"), ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "in-tx"),
                 ("CLIENT", "INFO"), ("CLIENT", "LIST", "ID", str(my_id), str(victim_id)),
                 ("CLIENT", "KILL", "ID", str(victim_id)), ("GET", k)]
        for cmd in queue:
            assert a.command(*cmd) == b"QUEUED", cmd
            # run at once and not queued, as in Redis: no element of EXEC's reply for them
            if cmd[0] == "SET":
                assert "nested" in str(a.command("MULTI"))
            elif cmd[1] == "GETNAME":
                assert "WATCH inside MULTI" in str(a.command("WATCH", k))
        out = a.command("EXEC")
        assert out[:4] == [b"OK", my_id, None, b"OK"], out
        info = fields(out[4])
        # as Redis shows a client while its EXEC runs
        assert (info["id"], info["name"], info["resp"], info["flags"], info["multi"], info["cmd"]) == \
            (str(my_id), "in-tx", str(protocol), "x", str(len(queue)), "exec"), info
        listed = {fields(ln)["id"]: ln for ln in out[5].decode().splitlines()}
        assert set(listed) == {str(my_id), str(victim_id)} and f"addr={victim_addr} " in listed[str(victim_id)], out[5]
        assert out[6:] == [1, b"v"], out
        assert a.command("CLIENT", "GETNAME") == b"in-tx"
        with pytest.raises(redis.ConnectionError):
            victim.ping()           # killed when EXEC ran
    finally:
        a.close()
        victim.close()


def test_monitor_shows_commands_queued_in_multi_when_exec_runs_them(proxy):
    """As Redis: a queued command shows when EXEC runs it (then EXEC), one DISCARDed never."""
    mon = proxy.raw()
    r, other = proxy.raw(), proxy.raw()
    k = uniq("montx")
    try:
        assert mon.command("MONITOR") == b"OK"
        assert r.command("MULTI") == b"OK"
        assert r.command("SET", k, "queued") == b"QUEUED"
        assert other.command("ECHO", "between") == b"between"
        assert r.command("EXEC") == [b"OK"]
        assert r.command("MULTI") == b"OK"
        assert r.command("SET", k, "discarded") == b"QUEUED"
        assert r.command("DISCARD") == b"OK"
        assert r.command("ECHO", "done") == b"done"
        lines = monitor_until(mon, lambda lines: any(b'"ECHO" "done"' in ln for ln in lines))
        cmds = [ln.split(b"] ", 1)[1].decode() for ln in lines if b'"ECHO" "between"' in ln or k.encode() in ln
                or any(w in ln for w in (b'"MULTI"', b'"EXEC"', b'"DISCARD"', b'"ECHO" "done"'))]
        assert cmds == ['"MULTI"', '"ECHO" "between"', f'"SET" "{k}" "queued"', '"EXEC"', '"MULTI"', '"DISCARD"',
                        '"ECHO" "done"'], cmds
    finally:
        for c in (mon, r, other):
            c.close()


def test_client_commands_on_a_subscribed_resp3_connection_are_answered_by_the_proxy(proxy):
    """RESP3 lets a subscribed client run any command: CLIENT ID/INFO/LIST/SETNAME/GETNAME are
    answered for it by the proxy (as on any other connection), in order with the pushes."""
    sub, pub = proxy.raw(), one(proxy.port)
    ch = uniq("ch3")
    try:
        my_id = hello_id(sub, 3)
        sub.send(encode_command("SUBSCRIBE", ch))
        assert sub.read_reply()[:2] == [b"subscribe", ch.encode()]
        assert sub.command("CLIENT", "ID") == my_id
        assert sub.command("CLIENT", "SETNAME", "subscriber") == b"OK"
        assert sub.command("CLIENT", "GETNAME") == b"subscriber"
        info = dict(kv.split("=", 1) for kv in sub.command("CLIENT", "INFO").decode().split())
        assert (info["id"], info["name"], info["sub"], info["flags"], info["resp"]) == \
            (str(my_id), "subscriber", "1", "P", "3"), info
        # a message published meanwhile arrives in its place, before CLIENT LIST's reply
        assert pub.publish(ch, "hello") == 1
        sub.send(encode_command("CLIENT", "LIST", "ID", str(my_id)))
        assert sub.read_reply() == [b"message", ch.encode(), b"hello"]
        (line,) = sub.read_reply().decode().splitlines()
        assert f"id={my_id} " in line and "name=subscriber" in line, line
        assert sub.command("PING") == b"PONG"
    finally:
        sub.close()
        pub.close()
