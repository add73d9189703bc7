"""Kernel-level network faults on 127.0.0.1: nftables drops and slow links, per process.

How a link between two processes is told apart on loopback
-----------------------------------------------------------
Every process under test is started inside its own cgroup v2 directory
(`<cgroup2 mount>/rrp_chaos_<pid>/<name>`; the test's own process, which runs
the clients, stays outside).  nftables' `socket cgroupv2 level 2 "<path>"`
matches the cgroup of the local socket a packet belongs to:

* in the OUTPUT hook, the sending socket: "packets sent by process A to
  TCP port p" (`socket cgroupv2 ... A ... tcp dport p`)
* in the INPUT hook, the receiving socket: "packets received by process A
  from TCP port p" (`socket cgroupv2 ... A ... tcp sport p`)

so the connections A opens to B's listening ports and the ones B opens to A's
are both covered, in each direction separately (one-way cuts).  Clients (the
test process) have no cgroup of their own: the client <-> proxy link is matched
by the proxy's client port alone.  Dropped packets get no RST: connects and
writes hang until the peer's own timeouts, as in a real partition.

nft resolves the path of a cgroupv2 match under /sys/fs/cgroup.  On a host in
hybrid mode cgroup v2 is mounted at /sys/fs/cgroup/unified, so every `nft`
call runs in a private mount namespace (`unshare -m`) where the cgroup2 mount
is bind-mounted on /sys/fs/cgroup; nothing changes outside that namespace.

Latency: nftables cannot delay, and this kernel has no netem (CONFIG_NET_SCH_NETEM
is not set: `tc qdisc add ... netem` answers "Specified qdisc kind is unknown"),
so neither netem on lo nor netns+veth+netem is possible.  A "slow link" fault
instead marks the connections of the chosen link (`ct mark`, set by the
initiator's packets; every packet of a marked connection, both ways, then gets
`meta priority 1:N`) and, only while such a fault is active, lo gets an HTB
root qdisc with no default class: unmarked packets (other tests on this host)
take HTB's direct queue unshaped, marked ones go to class 1:N whose rate makes
each packet wait its size / rate plus the queue ahead of it (a congested
link: the delay grows with the traffic; it is not netem's fixed delay).

Clean-up: one table `inet rrp_chaos_<pid>` per run, deleted by `close()`,
which runs from an atexit hook, from SIGTERM/SIGHUP handlers and from the
pytest fixture; `sweep_stale()` (called when a run starts) deletes the tables,
cgroups, qdisc and mounts left by runs whose pid is gone.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tests.integration.harness import pid_alive

PREFIX = "rrp_chaos_"
NFT = "/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else "nft"
TC = "/usr/sbin/tc" if os.path.exists("/usr/sbin/tc") else "tc"
QDISC_OWNER = Path("/run") / f"{PREFIX}qdisc.owner"     # pid of the run owning lo's root qdisc
QDISC_HANDLE = "1:"
FIRST_MARK = 0x5200


class NetFaultError(RuntimeError):
    """nft / tc / cgroup set-up failed (the message carries the command's stderr)."""


def cgroup2_root() -> Path:
    """Where cgroup v2 is mounted (/sys/fs/cgroup in unified mode, .../unified in hybrid mode)."""
    with open("/proc/self/mounts") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    raise NetFaultError("cgroup v2 is not mounted")


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise NetFaultError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def nft(script: str, check: bool = True) -> str:
    """Run an nft script (several commands, one a line) in a mount namespace where cgroup2 is at
    /sys/fs/cgroup; returns its stdout (with --echo --handle: the handles of added rules)."""
    root = cgroup2_root()
    if root == Path("/sys/fs/cgroup"):
        argv = [NFT, "--echo", "--handle", "-f", "-"]
    else:
        argv = ["unshare", "-m", "sh", "-c",
                f"mount --bind {root} /sys/fs/cgroup && exec {NFT} --echo --handle -f -"]
    r = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise NetFaultError(f"nft failed ({r.returncode}): {r.stderr.strip()}\n--- script ---\n{script}")
    return r.stdout


# ---------------------------------------------------------------------------
# stale state of dead runs
# ---------------------------------------------------------------------------

def _owner_pid(name: str) -> int | None:
    m = re.fullmatch(PREFIX + r"(\d+)", name)
    return int(m.group(1)) if m else None


def sweep_stale() -> list[str]:
    """Remove nft tables, cgroups, lo's qdisc and tmpfs mounts of runs whose pid is dead.
    Returns what it removed (for the log)."""
    removed: list[str] = []
    out = _run([NFT, "-j", "list", "tables"], check=False).stdout
    try:
        tables = [x["table"] for x in json.loads(out or "{}").get("nftables", []) if "table" in x]
    except ValueError:
        tables = []
    for t in tables:
        pid = _owner_pid(t["name"])
        if pid is not None and not pid_alive(pid):
            _run([NFT, "delete", "table", t["family"], t["name"]], check=False)
            removed.append(f"nft table {t['family']} {t['name']}")
    try:
        owner = int(QDISC_OWNER.read_text().strip() or "0")
    except (OSError, ValueError):
        owner = 0
    if owner and not pid_alive(owner):
        _run([TC, "qdisc", "del", "dev", "lo", "root"], check=False)
        QDISC_OWNER.unlink(missing_ok=True)
        removed.append("qdisc on lo")
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for mnt in mounts:
        m = re.search(PREFIX + r"(\d+)", mnt)
        if m and not pid_alive(int(m.group(1))):
            _run(["umount", "-l", mnt], check=False)
            removed.append(f"mount {mnt}")
    try:
        root = cgroup2_root()
    except NetFaultError:
        return removed
    for d in root.glob(PREFIX + "*"):
        pid = _owner_pid(d.name)
        if pid is not None and not pid_alive(pid):
            if _remove_cgroup_tree(d):
                removed.append(f"cgroup {d}")
    return removed


def _remove_cgroup_tree(d: Path) -> bool:
    """Kill what is left in a dead run's cgroups (its children outlived it), then rmdir them."""
    for child in sorted(d.glob("*/"), reverse=True):
        if child.is_dir():
            _kill_cgroup(child)
            try:
                child.rmdir()
            except OSError:
                pass
    try:
        d.rmdir()
        return True
    except OSError:
        return False


def _kill_cgroup(d: Path) -> None:
    try:
        pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
    except OSError:
        return
    for pid in pids:
        if pid == os.getpid():
            continue            # this process (the clients' cgroup): never kill ourselves
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------
# endpoints and the per-run table
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One party of a link: a process (its cgroup and the ports it listens on), or the
    clients, which have no cgroup and are matched through the proxy's client port."""

    name: str
    ports: tuple[int, ...]
    cgroup: str | None          # path relative to the cgroup2 root, or None (clients)


@dataclass
class _Fault:
    handles: list[tuple[str, int]] = field(default_factory=list)   # (chain, handle)
    band: int | None = None


class ChaosNet:
    """The nftables table, cgroups and lo qdisc of one run.  Thread-safe; `close()` is idempotent."""

    def __init__(self, run_id: int | None = None) -> None:
        self.pid = os.getpid()
        self.run_id = run_id if run_id is not None else self.pid
        self.table = f"{PREFIX}{self.run_id}"
        self.cg_root = cgroup2_root()
        self.cg_dir = self.cg_root / self.table
        self._lock = threading.RLock()
        self._faults: dict[int, _Fault] = {}
        self._next_id = 1
        self._bands_in_use: set[int] = set()
        self._marks = 0
        self._qdisc = False
        self._closed = False
        self.stale_removed = sweep_stale()
        self.cg_dir.mkdir(exist_ok=True)
        nft(f"add table inet {self.table}\n"
            f"add chain inet {self.table} out {{ type filter hook output priority -5; policy accept; }}\n"
            f"add chain inet {self.table} in {{ type filter hook input priority -5; policy accept; }}\n"
            f"add chain inet {self.table} marks {{ type filter hook output priority -10; policy accept; }}\n")
        _register_cleanup(self)

    # -- cgroups --------------------------------------------------------------------------
    def cgroup(self, name: str) -> str:
        """Create (once) the cgroup for process `name`; returns its path relative to the root."""
        (self.cg_dir / name).mkdir(exist_ok=True)
        return f"{self.table}/{name}"

    def launcher(self, name: str) -> list[str]:
        """argv prefix that moves the process into its cgroup before exec (so every socket it
        opens, from the first one on, belongs to that cgroup)."""
        procs = self.cg_root / self.cgroup(name) / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "chaos-launch"]

    def check_cgroup_match(self) -> None:
        """Fail loudly when `socket cgroupv2` matching cannot be compiled here."""
        path = self.cgroup("probe")
        out = nft(f"add rule inet {self.table} out socket cgroupv2 level 2 \"{path}\" tcp dport 1 counter\n")
        handle = _handles(out)[0]
        nft(f"delete rule inet {self.table} out handle {handle}\n")

    # -- rules ----------------------------------------------------------------------------
    @staticmethod
    def _ports(ports: Iterable[int]) -> str:
        ps = sorted(set(ports))
        return str(ps[0]) if len(ps) == 1 else "{ " + ", ".join(map(str, ps)) + " }"

    def _matches(self, src: Endpoint, dst: Endpoint) -> list[tuple[str, str]]:
        """(chain, match) pairs catching every packet sent from src to dst."""
        out: list[tuple[str, str]] = []
        if src.cgroup and dst.ports:        # on connections src opened to dst
            out.append(("out", f'socket cgroupv2 level 2 "{src.cgroup}" tcp dport {self._ports(dst.ports)}'))
        if dst.cgroup and src.ports:        # on connections dst opened to src
            out.append(("in", f'socket cgroupv2 level 2 "{dst.cgroup}" tcp sport {self._ports(src.ports)}'))
        if src.cgroup is None and dst.cgroup is not None:     # clients -> proxy
            out.append(("out", f"tcp dport {self._ports(dst.ports)}"))
        if dst.cgroup is None and src.cgroup is not None:     # proxy -> clients
            out.append(("out", f"tcp sport {self._ports(src.ports)}"))
        if not out:
            raise NetFaultError(f"cannot match packets from {src.name} to {dst.name}")
        return out

    def _add(self, rules: list[tuple[str, str]]) -> int:
        with self._lock:
            if self._closed:
                raise NetFaultError("ChaosNet is closed")
            script = "".join(f"add rule inet {self.table} {chain} {rule}\n" for chain, rule in rules)
            handles = _handles(nft(script))
            if len(handles) != len(rules):
                raise NetFaultError(f"expected {len(rules)} rule handles from nft, got {handles}")
            fid = self._next_id
            self._next_id += 1
            self._faults[fid] = _Fault([(chain, h) for (chain, _), h in zip(rules, handles)])
            return fid

    def drop(self, src: Endpoint, dst: Endpoint, both_ways: bool = True) -> int:
        """Silently drop packets from `src` to `dst` (and back, with `both_ways`); returns a fault id."""
        rules = [(c, m + " counter drop") for c, m in self._matches(src, dst)]
        if both_ways:
            rules += [(c, m + " counter drop") for c, m in self._matches(dst, src)]
        return self._add(rules)

    def slow(self, a: Endpoint, b: Endpoint, kbit: int) -> int:
        """Make the link between `a` and `b` slow: its packets (both ways) share an HTB class of
        `kbit` kbit/s with a minimal burst, so each packet waits its size / rate plus the queue
        ahead of it (at 16 kbit/s a 100-byte packet waits 50 ms, a 1 kB one 0.5 s; see the
        module docstring: this kernel has no netem)."""
        with self._lock:
            band = next(b_ for b_ in range(2, 64) if b_ not in self._bands_in_use)
            # a conntrack mark is never reused: connections marked by an earlier (healed) slow
            # link keep their mark, and must not be slowed by a later fault's class
            self._marks += 1
            mark = FIRST_MARK + self._marks
            self._ensure_qdisc()
            rate = max(1, int(kbit))
            _run([TC, "class", "replace", "dev", "lo", "parent", "1:", "classid", f"1:{band:x}", "htb",
                  "rate", f"{rate}kbit", "ceil", f"{rate}kbit", "burst", "100", "cburst", "100"])
            rules: list[tuple[str, str]] = []
            for src, dst in ((a, b), (b, a)):
                for chain, match in self._matches(src, dst):
                    if chain == "out":
                        # the initiator's packets name the connection; mark it for both ways
                        rules.append(("marks", f"{match} ct mark set {mark}"))
            rules.append(("marks", f"ct mark {mark} meta priority set 1:{band:x}"))
            fid = self._add(rules)
            self._faults[fid].band = band
            self._bands_in_use.add(band)
            return fid

    def heal(self, fid: int) -> None:
        """Undo one fault (idempotent)."""
        with self._lock:
            f = self._faults.pop(fid, None)
            if f is None or self._closed:
                return
            nft("".join(f"delete rule inet {self.table} {chain} handle {h}\n" for chain, h in f.handles),
                check=False)
            if f.band is not None:
                self._bands_in_use.discard(f.band)
                _run([TC, "class", "del", "dev", "lo", "classid", f"1:{f.band:x}"], check=False)
                if not self._bands_in_use:
                    self._drop_qdisc()

    def heal_all(self) -> None:
        with self._lock:
            for fid in list(self._faults):
                self.heal(fid)

    def active(self) -> int:
        with self._lock:
            return len(self._faults)

    def counters(self) -> str:
        """The table as nft lists it (rules with their packet counters), for logs."""
        r = _run([NFT, "list", "table", "inet", self.table], check=False)
        return r.stdout or r.stderr

    # -- lo qdisc ---------------------------------------------------------------------------
    def _ensure_qdisc(self) -> None:
        if self._qdisc:
            return
        cur = _run([TC, "qdisc", "show", "dev", "lo", "root"], check=False).stdout
        if cur.strip() and "noqueue" not in cur:
            raise NetFaultError(f"lo already has a root qdisc ({cur.strip()}); another run adds latency now")
        # HTB without a default class: unclassified packets take its direct queue, unshaped;
        # only packets whose skb priority names one of our classes (set by nft) are shaped
        _run([TC, "qdisc", "add", "dev", "lo", "root", "handle", QDISC_HANDLE, "htb"])
        QDISC_OWNER.write_text(str(self.pid))
        self._qdisc = True

    def _leave_own_cgroup(self) -> None:
        """If this process is still in one of the run's cgroups (the clients'), move it to the root."""
        with open("/proc/self/cgroup") as fh:
            mine = [line.strip()[3:] for line in fh if line.startswith("0::")]
        if mine and mine[0].lstrip("/").startswith(self.table):
            try:
                (self.cg_root / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass

    def _drop_qdisc(self) -> None:
        if self._qdisc:
            _run([TC, "qdisc", "del", "dev", "lo", "root"], check=False)
            QDISC_OWNER.unlink(missing_ok=True)
            self._qdisc = False

    # -- clean-up ---------------------------------------------------------------------------
    def close(self) -> None:
        """Delete the table, lo's qdisc (if ours) and the run's cgroups (killing leftovers)."""
        with self._lock:
            if self._closed or os.getpid() != self.pid:
                return
            self._closed = True
            self._faults.clear()
            self._drop_qdisc()
            _run([NFT, "delete", "table", "inet", self.table], check=False)
            self._leave_own_cgroup()
            _remove_cgroup_tree(self.cg_dir)
        _unregister_cleanup(self)


def _handles(nft_echo: str) -> list[int]:
    return [int(h) for h in re.findall(r"# handle (\d+)", nft_echo)]


# ---------------------------------------------------------------------------
# clean-up on every exit path
# ---------------------------------------------------------------------------

_open: list[object] = []          # ChaosNet and other closables (see disk.SmallFs)
_open_lock = threading.Lock()
_handlers_installed = False


def _close_all() -> None:
    with _open_lock:
        items = list(reversed(_open))
    for item in items:
        try:
            item.close()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def _register_cleanup(item: object) -> None:
    """Close `item` at interpreter exit and on SIGTERM/SIGHUP (then chain to the previous handler)."""
    global _handlers_installed
    with _open_lock:
        _open.append(item)
        if _handlers_installed:
            return
        _handlers_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            prev = signal.getsignal(sig)

            def handler(signum, frame, prev=prev):
                _close_all()
                if callable(prev):
                    prev(signum, frame)
                elif prev == signal.SIG_IGN:
                    return
                else:
                    raise SystemExit(128 + signum)
            signal.signal(sig, handler)


def _unregister_cleanup(item: object) -> None:
    with _open_lock:
        if item in _open:
            _open.remove(item)


register_cleanup = _register_cleanup
unregister_cleanup = _unregister_cleanup
