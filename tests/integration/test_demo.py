"""`redis-raft-proxy demo`, the README's first command, end to end.

One real demo (3 redis-server + 3 proxies, on free ports instead of the
defaults): it prints the endpoint, serves SET/GET through it, survives a
SIGKILL of its master (the proxies fail over; the demo logs the exit and how
to start the process again, and restarts nothing itself), and SIGTERM stops
every process it started. It says it is up only once its replicas have had
their first sync (before that a killed master cannot be replaced: this test
failed in CI when it killed the master within Redis' 5 s
repl-diskless-sync-delay, which the demo's redis-servers now set to 0).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from proxy.process.cluster_create import even_ranges
from proxy.routing.cluster_nodes import parse_cluster_nodes
from proxy.routing.keyslot import key_slot

from .harness import PROXY_BIN, HarnessError, free_port_block, port_is_listening, redis_client, wait_until

pytestmark = pytest.mark.timeout(120)


class Output(threading.Thread):
    """Collects a process's stdout lines as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.proc, self.lines = proc, []

    def run(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def restart_command(self, marker: str) -> str:
        """The command the demo printed to start an exited child again: the line after its
        exit line, read a moment later (a CI run looked for it in between)."""
        return wait_until(lambda: next((line.strip() for line in self.lines if marker in line), None), 10,
                          message=lambda: f"the demo to print a restart command with {marker!r}:\n{self.tail()}")


def test_demo_serves_fails_over_and_stops_every_process(tmp_path: Path) -> None:
    proxy, admin, redis_base, sentinel = (free_port_block(3) for _ in range(4))
    argv = [PROXY_BIN, "demo", "--proxy-port", str(proxy), "--admin-port", str(admin), "--redis-port",
            str(redis_base), "--sentinel-port", str(sentinel), "--dir", str(tmp_path / "demo")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    out = Output(proc)
    out.start()
    ports = [p + i for p in (proxy, admin, redis_base, sentinel) for i in range(3)]
    try:
        try:
            # (the banner's last line: the secret line below comes after the endpoint's)
            wait_until(lambda: out.has(f"redis-cli -p {proxy}") and out.has("try a failure") or proc.poll() is not None,
                       60, message="the demo to print its endpoint")
        except HarnessError as exc:
            raise HarnessError(f"{exc}\ndemo output:\n{out.tail(60)}") from None
        assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{out.tail(60)}"
        # "up" means ready for "try a failure": both replicas have had their first sync
        links = [redis.Redis(port=redis_base + i).info("replication")["master_link_status"] for i in (1, 2)]
        assert links == ["up", "up"], f"the demo said it is up before its replicas synced: {links}"
        # it made a random Raft secret, wrote it to a file only its owner reads, printed the
        # file's name (never the secret) for the operator, and the proxies need it
        named = [m.group(1) for line in out.lines
                 if (m := re.search(r"export REDIS_RAFT_PROXY_RAFT_SECRET_FILE=(\S+);", line))]
        assert named == [str(tmp_path / "demo" / "raft-secret")], f"no secret file named:\n{out.tail()}"
        secret_file = Path(named[0])
        assert secret_file.stat().st_mode & 0o777 == 0o600, oct(secret_file.stat().st_mode)
        secret = secret_file.read_text().rstrip("\n")
        assert re.fullmatch(r"[0-9a-f]{64}", secret), "the secret file holds no generated secret"
        assert not any(secret in line for line in out.lines), "the demo printed its Raft secret"

        def raft_cluster(secret: str | None) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{admin}/raft/cluster",
                                         headers={"X-Raft-Secret": secret} if secret is not None else {})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code
        assert (raft_cluster(secret), raft_cluster(None), raft_cluster("")) == (200, 403, 403)
        # the printed export is all an operator command needs (pause, then resume before the kill)
        op_env = {**env, "REDIS_RAFT_PROXY_RAFT_SECRET_FILE": named[0]}
        for cmd in (["pause", "--reason", "demo test"], ["resume"]):
            done = subprocess.run([PROXY_BIN, *cmd, "--endpoint", f"http://127.0.0.1:{admin}"], env=op_env,
                                  capture_output=True, text=True, timeout=30, check=False)
            assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
        with redis_client(proxy, decode=True) as cl:
            assert cl.set("demo:k", "v1") is True
            assert cl.get("demo:k") == "v1"
        master = redis.Redis(port=redis_base)
        master_pid = master.info("server")["process_id"]
        offset = master.info("replication")["master_repl_offset"]

        def replicas_synced() -> bool:  # a replica that never synced is rightly never promoted
            infos = [redis.Redis(port=redis_base + i).info("replication") for i in (1, 2)]
            return all(i.get("master_link_status") == "up" and i.get("slave_repl_offset", -1) >= offset
                       for i in infos)
        wait_until(replicas_synced, 10, message="the demo's replicas to have the first write")
        os.kill(master_pid, signal.SIGKILL)
        wait_until(lambda: out.has(f"redis-{redis_base} (pid {master_pid}) exited"), 10,
                   message="the demo to log the master's exit")
        out.restart_command(f"--port {redis_base}")

        def write_after_failover() -> bool:
            try:
                with redis_client(proxy, decode=True, timeout=2) as cl:
                    return cl.set("demo:k", "v2") is True
            except redis.RedisError:
                return False
        try:
            wait_until(write_after_failover, 30, message="a write through the demo after its master was killed")
        except HarnessError as exc:
            status = subprocess.run(["curl", "-s", f"http://127.0.0.1:{admin}/status"], capture_output=True,
                                    check=False,
                                    text=True).stdout
            raise HarnessError(f"{exc}\n/status: {status}\ndemo output:\n{out.tail(60)}") from None
        with redis_client(proxy + 1, decode=True) as cl:
            assert wait_until(lambda: cl.get("demo:k") == "v2", 10), "another proxy of the demo reads the write"
        assert proc.poll() is None, f"the demo stopped after one of its processes died:\n{out.tail()}"
        assert not port_is_listening(redis_base), "the demo restarted the killed master behind the user's back"
    finally:
        code = terminate_demo(proc)
    assert code == 0, f"the demo exited with {code} on SIGTERM:\n{out.tail()}"
    left = [p for p in ports if port_is_listening(p)]
    assert not left, f"ports still served after the demo stopped: {left}"
    ps = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, check=False, text=True)
    assert not ps.stdout.strip(), f"processes of the demo outlived it: {ps.stdout}"
    # Run again in the same --dir: its Redis nodes kept no data, so the proxies' Raft state
    # of this run (which remembers the failover and the data written) must not hold writes.
    proc, out, ports2 = start_demo(tmp_path)
    try:
        wait_banner(proc, out, ports2)
        assert out.has("starting afresh"), out.tail()
        with redis_client(ports2["proxy"], decode=True) as cl:
            assert cl.set("demo:k", "v3") is True
            assert cl.get("demo:k") == "v3"
    finally:
        stop_demo(proc, out)


def start_demo(tmp_path: Path, *flags: str, redis_ports: int = 3) -> tuple[subprocess.Popen, Output, dict[str, int]]:
    """Run `redis-raft-proxy demo` on free ports (`redis_ports` in a row from the first
    Redis port); return it, its output and its first ports."""
    ports = {kind: free_port_block(redis_ports if kind == "redis" else 3)
             for kind in ("proxy", "admin", "redis", "sentinel")}
    argv = [PROXY_BIN, "demo", "--proxy-port", str(ports["proxy"]), "--admin-port", str(ports["admin"]),
            "--redis-port", str(ports["redis"]), "--sentinel-port", str(ports["sentinel"]),
            "--dir", str(tmp_path / "demo"), *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_RAFT_PROXY_")}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    out = Output(proc)
    out.start()
    return proc, out, ports


def terminate_demo(proc: subprocess.Popen) -> int:
    """SIGTERM the demo (if it still runs) and return its exit status (SIGKILL after 30 s, and raise)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def wait_banner(proc: subprocess.Popen, out: Output, ports: dict[str, int]) -> None:
    """Until the demo printed its endpoint (it is up), or raise with its output."""
    try:
        wait_until(lambda: out.has(f"redis-cli -p {ports['proxy']}") and out.has("try a failure")
                   or proc.poll() is not None, 60, message="the demo to print its endpoint")
    except HarnessError as exc:
        raise HarnessError(f"{exc}\ndemo output:\n{out.tail(60)}") from None
    assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{out.tail(60)}"


def stop_demo(proc: subprocess.Popen, out: Output) -> None:
    code = terminate_demo(proc)
    assert code == 0, f"the demo exited with {code} on SIGTERM:\n{out.tail()}"


@pytest.mark.timeout(90)
def test_demo_tls_serves_only_tls_on_every_hop(tmp_path: Path) -> None:
    """`demo --tls`: clients need TLS and the client certificate it made; the operator CLI
    reaches the HTTPS admin port with its CA; a dead TLS redis-server's restart command is
    TLS only too."""
    proc, out, ports = start_demo(tmp_path, "--tls")
    certs = tmp_path / "demo" / "tls"
    proxy, admin, redis_base = ports["proxy"], ports["admin"], ports["redis"]
    tls_kwargs = {"ssl": True, "ssl_ca_certs": str(certs / "ca.crt"), "ssl_certfile": str(certs / "client.crt"),
                  "ssl_keyfile": str(certs / "client.key")}
    try:
        try:
            wait_until(lambda: out.has(f"redis-cli --tls --cacert {certs / 'ca.crt'} --cert {certs / 'client.crt'} "
                                       f"--key {certs / 'client.key'} -p {proxy}") or proc.poll() is not None,
                       60, message="the demo to print its TLS endpoint")
        except HarnessError as exc:
            raise HarnessError(f"{exc}\ndemo output:\n{out.tail(60)}") from None
        assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{out.tail(60)}"
        with redis.Redis(port=proxy, socket_timeout=5, decode_responses=True, **tls_kwargs) as cl:
            assert cl.set("demo:tls", "v1") is True
        with redis.Redis(port=proxy + 1, socket_timeout=5, decode_responses=True, **tls_kwargs) as cl:
            assert wait_until(lambda: cl.get("demo:tls") == "v1", 10), "another proxy reads the write over TLS"
        for port in (proxy, redis_base):        # plaintext on a TLS-only port: closed, or no answer
            with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
                redis_client(port, timeout=1).ping()
        status = subprocess.run([PROXY_BIN, "status", "--endpoint", f"https://127.0.0.1:{admin}", "--cacert",
                                 str(certs / "ca.crt")], capture_output=True, check=False, text=True, timeout=30)
        assert status.returncode == 0, f"status over HTTPS failed: {status.stdout}{status.stderr}"
        assert out.has(f"redis-raft-proxy status --endpoint https://127.0.0.1:{admin} --cacert {certs / 'ca.crt'}")
        replica = redis.Redis(port=redis_base + 2, socket_timeout=5, **tls_kwargs)
        os.kill(replica.info("server")["process_id"], signal.SIGKILL)
        wait_until(lambda: out.has(f"redis-{redis_base + 2} (pid"), 10, message="the demo to log the replica's exit")
        restart = out.restart_command(f"--tls-port {redis_base + 2}")
        assert "--port 0" in restart and "--tls-replication yes" in restart, restart
    finally:
        stop_demo(proc, out)


def keys_per_shard(shards: int) -> list[str]:
    """One key in each shard's slots (the demo splits the slots evenly)."""
    out: list[str | None] = [None] * shards
    i = 0
    while None in out:
        key = f"demo:{i}"
        for n, (start, end) in enumerate(even_ranges(shards)):
            if start <= key_slot(key.encode()) <= end and out[n] is None:
                out[n] = key
        i += 1
    return out


@pytest.mark.timeout(240)
def test_demo_shards_serves_every_shard_then_fails_one_over_while_the_others_serve(tmp_path: Path) -> None:
    """`demo --shards 3`: 3 masters + 3 replicas cluster-enabled, with the settings the
    proxies require, the slots split evenly; the printed endpoint serves SET/GET in every
    shard and MGET across them, each key stored on its shard's master. Then SIGKILL the
    master of shard 2: shards 1 and 3 keep serving writes at once, shard 2's replica is
    promoted and takes writes, and the dead node, started again with the command the demo
    printed, rejoins as a replica of its shard. (One demo for both halves: a demo start
    is most of the time.)"""
    proc, out, ports = start_demo(tmp_path, "--shards", "3", redis_ports=12)
    proxy, admin, redis_base = ports["proxy"], ports["admin"], ports["redis"]
    restarted: subprocess.Popen | None = None
    try:
        try:
            wait_until(lambda: out.has(f"redis-cli -p {proxy}") or proc.poll() is not None, 120,
                       message="the demo to print its endpoint")
        except HarnessError as exc:
            raise HarnessError(f"{exc}\ndemo output:\n{out.tail(60)}") from None
        assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{out.tail(60)}"
        masters = [redis.Redis(port=redis_base + i, decode_responses=True) for i in range(3)]
        for i, (m, (start, end)) in enumerate(zip(masters, even_ranges(3))):
            assert m.config_get("cluster-replica-no-failover")["cluster-replica-no-failover"] == "yes"
            assert m.config_get("cluster-require-full-coverage")["cluster-require-full-coverage"] == "no"
            me = next(e for e in parse_cluster_nodes(m.execute_command("CLUSTER", "NODES")) if e.myself)
            assert me.slots == ((start, end),), f"master {i} owns {me.slots}"
            assert m.execute_command("CLUSTER", "INFO").startswith("cluster_state:ok")
            replica = redis.Redis(port=redis_base + 3 + i, decode_responses=True)
            assert replica.info("replication")["master_port"] == redis_base + i, "replica i follows master i"
            assert out.has(f"slots {start}-{end}: 127.0.0.1:{redis_base + i} (master)"), out.tail()
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as r:
            doc = json.loads(r.read())
        assert doc["mode"] == "cluster" and len(doc["shards"]) == 3 and all(s["master"] for s in doc["shards"])
        keys = keys_per_shard(3)
        with redis_client(proxy, decode=True) as cl:
            for k in keys:
                assert cl.set(k, f"v-{k}") is True
                assert cl.get(k) == f"v-{k}"
            assert cl.mget([*keys, "demo:none"]) == [f"v-{k}" for k in keys] + [None]
        for k, m in zip(keys, masters):
            assert m.get(k) == f"v-{k}", f"{k} is not on the master of its shard"
        with redis_client(proxy + 2, decode=True) as cl:
            assert wait_until(lambda: cl.mget(keys) == [f"v-{k}" for k in keys], 10), \
                "another proxy of the demo reads the writes"
        with redis_client(proxy, decode=True) as cl:
            for k in keys:
                assert cl.set(k, "v1") is True
        replica = redis.Redis(port=redis_base + 4, decode_responses=True, single_connection_client=True)
        replica.execute_command("READONLY")
        wait_until(lambda: replica.get(keys[1]) == "v1", 10, message="shard 2's replica to have the write")
        master = redis.Redis(port=redis_base + 1)
        os.kill(master.info("server")["process_id"], signal.SIGKILL)
        with redis_client(proxy, decode=True, timeout=2) as cl:
            for k in (keys[0], keys[2]):      # the other shards never wait for shard 2
                assert cl.set(k, "v2") is True and cl.get(k) == "v2"

        def write_shard_2() -> bool:
            try:
                with redis_client(proxy, decode=True, timeout=10) as cl:
                    return cl.set(keys[1], "v2") is True
            except redis.RedisError:
                return False
        try:
            wait_until(write_shard_2, 40, message="a write to shard 2 after its master was killed")
        except HarnessError as exc:
            status = subprocess.run(["curl", "-s", f"http://127.0.0.1:{ports['admin']}/status"],
                                    capture_output=True, check=False, text=True).stdout
            logs = "\n".join((tmp_path / "demo" / f"proxy-{i}.log").read_text()[-3000:] for i in (1, 2, 3))
            raise HarnessError(f"{exc}\n/status: {status}\nproxy logs:\n{logs}") from None
        assert replica.info("replication")["role"] == "master", "shard 2's replica was promoted"
        with redis_client(proxy + 1, decode=True) as cl:
            assert wait_until(lambda: cl.mget(keys) == ["v2", "v2", "v2"], 10)
        restart = out.restart_command(f"--port {redis_base + 1} ")
        restarted = subprocess.Popen(restart, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

        def rejoined() -> bool:
            info = redis_client(redis_base + 1, timeout=2).info("replication")
            return info["role"] == "slave" and info["master_port"] == redis_base + 4 \
                and info["master_link_status"] == "up"
        wait_until(rejoined, 30, message="the restarted old master to rejoin as a replica of its shard")
    finally:
        if restarted is not None and restarted.poll() is None:
            os.killpg(restarted.pid, signal.SIGTERM)
            restarted.wait(10)
        stop_demo(proc, out)
    left = [p for p in [redis_base + i for i in range(12)] + [proxy + i for i in range(3)] if port_is_listening(p)]
    assert not left, f"ports still served after the demo stopped: {left}"
