"""Summaries (medians, ratios, added latency), the Markdown table, JSON and the PNG chart."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterable, Sequence

from .runner import Sample

BASELINE = "direct"
DASH = "–"


@dataclass
class Summary:
    """Medians over the rounds for one (target, pipeline, test)."""

    target: str
    pipeline: int
    test: str
    runs: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    ratio: float | None = None          # rps / direct rps
    added_p50_ms: float | None = None   # p50 - direct p50
    added_p99_ms: float | None = None   # p99 - direct p99
    cpu_us_per_cmd: float | None = None           # the target process's CPU per command (median of runs)
    backend_cpu_us_per_cmd: float | None = None   # the redis-server's behind it
    sys_us_per_cmd: float | None = None           # of cpu_us_per_cmd, the kernel's (system time)
    client_cpu_us_per_cmd: float | None = None    # redis-benchmark's own
    # rps / direct's rps of the same round, in round order: the rounds alternate the
    # targets, so a drift of the machine's speed between rounds cancels out of each
    round_ratios: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain dict for the JSON report (floats rounded to 4 decimals)."""
        return {k: _rounded(v) for k, v in asdict(self).items()}


def _rounded(value: object) -> object:
    """`value` with its floats (and a list's) rounded to 4 decimals."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _median(values: Iterable[float | None]) -> float | None:
    """Median of the non-None values, or None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _summarize_group(group: list[Sample]) -> Summary:
    """Medians of one (target, pipeline, test) group of samples."""
    first = group[0]
    return Summary(first.target, first.pipeline, first.test, len(group),
                   _median(s.rps for s in group) or 0.0,
                   _median(s.p50_ms for s in group), _median(s.p99_ms for s in group),
                   cpu_us_per_cmd=_median(getattr(s, "cpu_us_per_cmd", None) for s in group),
                   backend_cpu_us_per_cmd=_median(getattr(s, "backend_cpu_us_per_cmd", None) for s in group),
                   sys_us_per_cmd=_median(getattr(s, "sys_us_per_cmd", None) for s in group),
                   client_cpu_us_per_cmd=_median(getattr(s, "client_cpu_us_per_cmd", None) for s in group))


def round_ratios(group: Sequence[Sample], base: Sequence[Sample]) -> list[float]:
    """Each round's ops/s of `group` over the baseline's in the same round (rounds the
    baseline has no figure for are left out)."""
    direct = {s.round: s.rps for s in base if s.rps}
    return [s.rps / direct[s.round] for s in sorted(group, key=lambda s: s.round) if s.round in direct]


def _compare(summary: Summary, base: Summary | None) -> None:
    """Fill the ratio and added latency of `summary` relative to the baseline."""
    if base is None:
        return
    if base.rps:
        summary.ratio = summary.rps / base.rps
    if summary.p50_ms is not None and base.p50_ms is not None:
        summary.added_p50_ms = summary.p50_ms - base.p50_ms
    if summary.p99_ms is not None and base.p99_ms is not None:
        summary.added_p99_ms = summary.p99_ms - base.p99_ms


def summarize(samples: Sequence[Sample], targets: Sequence[str], pipelines: Sequence[int],
              tests: Sequence[str]) -> list[Summary]:
    """One Summary per (pipeline, test, target), in that order, baseline first.

    Combinations with no sample (a skipped or failed target) are left out.
    """
    out: list[Summary] = []
    for pipeline in pipelines:
        for test in tests:
            by_target = {name: [s for s in samples if s.target == name and s.pipeline == pipeline
                                and s.test == test] for name in targets}
            rows = {name: _summarize_group(group) for name, group in by_target.items() if group}
            for name, row in rows.items():
                _compare(row, rows.get(BASELINE))
                if name != BASELINE:
                    row.round_ratios = round_ratios(by_target[name], by_target.get(BASELINE, []))
            out.extend(rows.values())
    return out


def _fmt(value: float | None, spec: str, prefix: str = "") -> str:
    """Format a number, or a dash for None."""
    if value is None:
        return DASH
    sign = "+" if prefix == "+" and value >= 0 else ""
    return f"{sign}{value:{spec}}"


def table_rows(summaries: Sequence[Summary]) -> list[list[str]]:
    """Cells of the results table; latency columns only for unpipelined runs."""
    rows = []
    for s in summaries:
        latency = s.pipeline == 1
        ratio = DASH if s.ratio is None or s.target == BASELINE else f"{s.ratio:.2f}×"
        added = s.target != BASELINE and latency
        rounds = f"{min(s.round_ratios):.2f}-{max(s.round_ratios):.2f}" if len(s.round_ratios) > 1 else DASH
        rows.append([s.target, s.test, str(s.pipeline), f"{s.rps:,.0f}", ratio, rounds,
                     _fmt(s.p50_ms, ".3f") if latency else DASH,
                     _fmt(s.p99_ms, ".3f") if latency else DASH,
                     _fmt(s.added_p50_ms, ".3f", "+") if added else DASH,
                     _fmt(s.added_p99_ms, ".3f", "+") if added else DASH,
                     _fmt(s.cpu_us_per_cmd, ".1f"),
                     _fmt(s.sys_us_per_cmd, ".1f"),
                     _fmt(s.backend_cpu_us_per_cmd, ".1f") if s.target != BASELINE else DASH])
    return rows


HEADER = ["target", "test", "-P", "ops/s", "vs direct", "rounds vs direct", "p50 ms", "p99 ms",
          "added p50 ms", "added p99 ms", "CPU µs/cmd", "of it kernel", "Redis CPU µs/cmd"]
RIGHT_ALIGNED = set(range(2, len(HEADER)))


def markdown_table(summaries: Sequence[Summary]) -> str:
    """A padded GitHub Markdown table of the summaries (readable as plain text too)."""
    return padded_table(HEADER, table_rows(summaries), RIGHT_ALIGNED)


def padded_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A GitHub Markdown table with its columns padded (columns `right` right-aligned)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(header), line(rule), *(line(r) for r in rows)])


@dataclass
class CpuBudget:
    """What every process of one run spent per command, against the direct run's.

    The client (redis-benchmark), the target and the redis-server behind it share the
    machine's cores; while they keep them all busy (pipelined runs), ops/s go as the
    inverse of their total CPU per command, so `cpu_bound_ratio` (the direct run's total
    over this one's) is about the ops/s ratio, and `target_for_goal` is the target's CPU
    per command at which it would reach `goal`, the client's and Redis's parts as measured.
    Unpipelined, the hop's latency rather than CPU bounds a run, and the two ratios part.
    For the direct run itself `own` is redis-server's and `redis` is 0."""

    target: str
    pipeline: int
    test: str
    client: float
    own: float
    redis: float
    total: float
    cpu_bound_ratio: float
    measured_ratio: float | None
    target_for_goal: float | None


def cpu_budget(summaries: Sequence[Summary], goal: float = 0.8) -> list[CpuBudget]:
    """A CpuBudget per row whose figures are all there, the direct run's included."""
    base = {(s.pipeline, s.test): s for s in summaries if s.target == BASELINE}
    out = []
    for s in summaries:
        b = base.get((s.pipeline, s.test))
        direct_run = s.target == BASELINE
        redis = 0.0 if direct_run else s.backend_cpu_us_per_cmd
        if b is None or None in (s.client_cpu_us_per_cmd, s.cpu_us_per_cmd, redis, b.client_cpu_us_per_cmd,
                                 b.cpu_us_per_cmd):
            continue
        direct = b.client_cpu_us_per_cmd + b.cpu_us_per_cmd
        total = s.client_cpu_us_per_cmd + s.cpu_us_per_cmd + redis
        out.append(CpuBudget(s.target, s.pipeline, s.test, s.client_cpu_us_per_cmd, s.cpu_us_per_cmd, redis,
                             total, direct / total if total else 0.0, None if direct_run else s.ratio,
                             None if direct_run else direct / goal - s.client_cpu_us_per_cmd - redis))
    return out


def budget_table(budgets: Sequence[CpuBudget], goal: float = 0.8) -> str:
    """`cpu_budget`'s rows as a Markdown table."""
    header = ["target", "test", "-P", "client µs/cmd", "target µs/cmd", "Redis behind µs/cmd", "all µs/cmd",
              "CPU-bound ratio", "measured ratio", f"target µs/cmd for {goal:g}×"]
    rows = []
    for b in budgets:
        direct_run = b.target == BASELINE
        rows.append([b.target, b.test, str(b.pipeline), f"{b.client:.1f}", f"{b.own:.1f}",
                     DASH if direct_run else f"{b.redis:.1f}", f"{b.total:.1f}",
                     DASH if direct_run else f"{b.cpu_bound_ratio:.2f}×",
                     DASH if b.measured_ratio is None else f"{b.measured_ratio:.2f}×",
                     _fmt(b.target_for_goal, ".1f")])
    return padded_table(header, rows, set(range(2, len(header))))


def save_result(benchmark: str, result: dict, results_dir: Path, latest: bool = False) -> Path:
    """`result` with the run's time and machine as `<benchmark>-<UTC stamp>.json` in
    `results_dir` (and as `<benchmark>-latest.json` with `latest`); the first path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = {"benchmark": benchmark, "time": stamp, "platform": platform.platform(), "cpus": os.cpu_count(),
               "python": platform.python_version(), **result}
    path = results_dir / f"{benchmark}-{stamp}.json"
    write_json(payload, path, *([results_dir / f"{benchmark}-latest.json"] if latest else []))
    return path


def write_json(payload: dict[str, object], *paths: Path) -> None:
    """Write `payload` as indented JSON to every path (creating directories)."""
    text = json.dumps(payload, indent=2, sort_keys=False) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _bar_panel(ax: object, summaries: Sequence[Summary], targets: Sequence[str],
               tests: Sequence[str], pipeline: int) -> None:
    """Grouped bars of ops/s for one pipeline depth: one group per test, one bar per target."""
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        rows = {s.test: s for s in summaries if s.target == target and s.pipeline == pipeline}
        xs = [t + (i - (len(targets) - 1) / 2) * width for t in range(len(tests))]
        heights = [rows[t].rps if t in rows else 0.0 for t in tests]
        bars = ax.bar(xs, heights, width, label=target)
        for bar, test in zip(bars, tests):
            row = rows.get(test)
            if row is not None and row.ratio is not None and target != BASELINE:
                top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
                ax.annotate(f"{row.ratio:.2f}×", top, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(tests)), tests)
    ax.set_title(f"-P {pipeline}: ops/s (ratio vs direct)")
    ax.set_ylabel("ops/s")
    ax.grid(axis="y", alpha=0.3)


def _latency_panel(ax: object, summaries: Sequence[Summary], targets: Sequence[str],
                   tests: Sequence[str]) -> None:
    """Grouped bars of p50 and p99 latency at -P 1: one group per test+percentile."""
    labels = [f"{t} {p}" for t in tests for p in ("p50", "p99")]
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        rows = {s.test: s for s in summaries if s.target == target and s.pipeline == 1}
        heights = []
        for test in tests:
            row = rows.get(test)
            heights += [row.p50_ms or 0.0, row.p99_ms or 0.0] if row else [0.0, 0.0]
        xs = [x + (i - (len(targets) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, heights, width, label=target)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title("-P 1: latency")
    ax.set_ylabel("ms")
    ax.grid(axis="y", alpha=0.3)


def plot_chart(summaries: Sequence[Summary], targets: Sequence[str], pipelines: Sequence[int],
               tests: Sequence[str], path: Path, title: str) -> None:
    """Save a PNG: one ops/s panel per pipeline depth, plus a -P 1 latency panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_latency = any(s.pipeline == 1 and s.p50_ms is not None for s in summaries)
    panels = len(pipelines) + (1 if has_latency else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6), squeeze=False)
    for ax, pipeline in zip(axes[0], pipelines):
        _bar_panel(ax, summaries, targets, tests, pipeline)
    if has_latency:
        _latency_panel(axes[0][-1], summaries, targets, tests)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(targets), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
