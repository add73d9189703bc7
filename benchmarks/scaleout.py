#!/usr/bin/env python3
"""Scale-out: aggregate SET/GET throughput of 1, 2 and 3 proxies behind a split client load.

Starts, on 127.0.0.1 only, 3 redis-server (1 master + 2 replicas) and a Raft
cluster of proxies (benchmarks/raft_cluster_lib.py: 3 voters, plus with
`--learners` proxies joined as non-voting learners, which then take the 2nd
and 3rd places). For k = 1, 2, 3 it runs k redis-benchmark processes in
parallel, one per proxy, splitting the clients and requests evenly, and the
same k-way split straight against the master redis-server. The aggregate
throughput is the requests of all k processes over the wall time of the
group (each test, SET then GET, runs as its own group). Reads go to the
master (`read_policy = master`) unless `--read-policy` says otherwise, so that
the direct baseline and the proxies hit the same single redis-server.

Prints the load average at the start and the end: the ratios mean little on
a busy machine, so say so when quoting them. Writes
benchmarks/results/scaleout-<timestamp>.json and scaleout-latest.json.

Examples:
    benchmarks/scaleout.py
    benchmarks/scaleout.py --learners 2 -c 60 -n 150000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE.parent))

from benchmarks.benchlib.runner import parse_csv
from benchmarks.raft_cluster_lib import NAMES, RaftCluster, host_info, save_results
from tests.integration.harness import HOST, wait_until

TESTS = ("SET", "GET")


def run_group(ports: list[int], test: str, clients: int, requests: int, pipeline: int,
              timeout_s: float) -> dict:
    """One redis-benchmark per port, all at once, clients and requests split evenly;
    the aggregate ops/s is every request over the group's wall time."""
    k = len(ports)
    per_clients = max(1, clients // k)
    per_requests = max(1, requests // k)
    argvs = [["redis-benchmark", "-h", HOST, "-p", str(p), "-t", test.lower(), "-c", str(per_clients),
              "-n", str(per_requests), "-P", str(pipeline), "-r", "100000", "--csv"] for p in ports]
    t0 = time.monotonic()
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in argvs]
    outs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError(f"redis-benchmark timed out after {timeout_s} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"redis-benchmark exit {proc.returncode}: {err.strip()[-300:]}")
        outs.append(out)
    wall = time.monotonic() - t0
    parsed = [parse_csv(o).get(test, {}) for o in outs]
    if any("rps" not in p for p in parsed):
        raise RuntimeError(f"no {test} result in redis-benchmark's output: {outs}")
    return {"processes": k, "clients_each": per_clients, "requests_total": per_requests * k,
            "wall_s": round(wall, 3), "ops": round(per_requests * k / wall),
            "sum_of_rps": round(sum(p["rps"] for p in parsed)),
            "p50_ms": [p.get("p50_ms") for p in parsed]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--clients", type=int, default=60, help="clients in all (split over the processes)")
    ap.add_argument("-n", "--requests", type=int, default=120_000, help="requests per test in all")
    ap.add_argument("-P", "--pipeline", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    ap.add_argument("--learners", type=int, default=0, choices=(0, 1, 2),
                    help="join this many learners; they are the 2nd (and 3rd) proxies measured")
    ap.add_argument("--read-policy", default="master", choices=("master", "replicas", "any"))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per redis-benchmark group")
    args = ap.parse_args()

    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
          f"({os.cpu_count()} CPUs)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="scaleout-"))
    c = RaftCluster(workdir, NAMES, options={"log_level": "warning"}, read_policy=args.read_policy)
    try:
        c.start(timeout=60)
        order = list(NAMES)
        learners = [f"learner-{i}" for i in range(1, args.learners + 1)]
        for name in learners:
            joiner = c.add_joiner(name, via=c.admin_url(NAMES[0]), peers=c.bootstrap_peers())
            joiner.options["learner"] = True
            joiner.spawn()
            joiner.wait_ready(60)
        if learners:
            wait_until(lambda: (s := c.status(NAMES[0])) and sorted(s["raft"]["learners"]) == learners
                       and all((x := c.status(n)) and x["lease"]["held"] for n in learners), 30,
                       message="the learners to join and hold a lease")
            order = [NAMES[0], *learners, *[n for n in NAMES[1:]]][:3]
        c.wait_converged(timeout=30)
        master_port = c.rs.master.plain_port
        results: dict[str, dict[str, list[dict]]] = {}
        for rnd in range(args.rounds):
            for k in (1, 2, 3):
                for target, ports in (("direct", [master_port] * k),
                                      ("proxies", [c.client_ports[n] for n in order[:k]])):
                    for test in TESTS:
                        r = run_group(ports, test, args.clients, args.requests, args.pipeline, args.timeout)
                        results.setdefault(f"{target}-{k}", {}).setdefault(test, []).append(r)
                        print(f"round {rnd + 1} k={k} {target:7s} {test}: {r['ops']:>8} ops/s "
                              f"(sum of rps {r['sum_of_rps']})", flush=True)
        load_end = os.getloadavg()
        med = {key: {t: statistics.median(r["ops"] for r in runs) for t, runs in tests.items()}
               for key, tests in results.items()}
        print()
        print("| proxies behind the split load | SET ops/s | vs direct | GET ops/s | vs direct |")
        print("|---|---|---|---|---|")
        for k in (1, 2, 3):
            px, dr = med[f"proxies-{k}"], med[f"direct-{k}"]
            names = ", ".join(order[:k])
            print(f"| {k} ({names}) | {px['SET']:.0f} | {px['SET'] / dr['SET']:.2f} | {px['GET']:.0f} | "
                  f"{px['GET'] / dr['GET']:.2f} |")
        one = med["proxies-1"]
        print("\nscaling vs 1 proxy: " + ", ".join(
            f"{k} proxies SET x{med[f'proxies-{k}']['SET'] / one['SET']:.2f} "
            f"GET x{med[f'proxies-{k}']['GET'] / one['GET']:.2f}" for k in (2, 3)))
        print(f"direct redis-server, {args.clients} clients split 1/2/3 ways: " + ", ".join(
            f"SET {med[f'direct-{k}']['SET']:.0f} GET {med[f'direct-{k}']['GET']:.0f}" for k in (1, 2, 3)))
        print(f"load average: start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
              f"end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} ({os.cpu_count()} CPUs)")
        settings = {"clients": args.clients, "requests": args.requests, "pipeline": args.pipeline,
                    "rounds": args.rounds, "learners": args.learners, "read_policy": args.read_policy,
                    "order": order}
        dated, _ = save_results(HERE / "results", "scaleout",
                                {"host": host_info(), "loadavg_end": list(load_end), "settings": settings,
                                 "median_ops": med, "runs": results})
        print(f"results: {dated}")
        return 0
    finally:
        c.cleanup()


if __name__ == "__main__":
    sys.exit(main())
