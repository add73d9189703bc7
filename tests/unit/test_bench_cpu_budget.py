"""benchmarks/benchlib: the client's CPU per command, the CPU budget of a run (report.cpu_budget), and
each round's ratio to the direct run of the same round (report.round_ratios)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.benchlib.report import (
    Summary,
    budget_table,
    cpu_budget,
    markdown_table,
    summarize,
)
from benchmarks.benchlib.runner import Sample, children_cpu_seconds


def _row(target: str, client: float | None, own: float | None, redis: float | None,
         ratio: float | None = None, pipeline: int = 16) -> Summary:
    return Summary(target, pipeline, "SET", 3, 100.0, None, None, ratio=ratio, cpu_us_per_cmd=own,
                   backend_cpu_us_per_cmd=redis, client_cpu_us_per_cmd=client)


def test_a_child_that_burns_cpu_counts_once_it_was_waited_for():
    before = children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 0.2: pass"], check=True)
    assert children_cpu_seconds() - before >= 0.15


def test_the_ratio_a_cpu_bound_run_gets_is_the_direct_total_over_the_target_total():
    rows = [_row("direct", 1.3, 1.5, None), _row("proxy", 1.3, 2.1, 0.9, ratio=0.63)]
    direct, proxy = cpu_budget(rows)
    assert (direct.total, direct.cpu_bound_ratio, direct.target_for_goal) == (2.8, 1.0, None)
    assert proxy.total == pytest.approx(4.3)
    assert proxy.cpu_bound_ratio == pytest.approx(2.8 / 4.3)
    assert proxy.measured_ratio == 0.63
    # 0.8 x needs every process together at 2.8 / 0.8 = 3.5 us: the proxy's own part is what is left
    assert proxy.target_for_goal == pytest.approx(3.5 - 1.3 - 0.9)


def test_rows_without_every_figure_or_without_a_direct_run_are_left_out():
    assert cpu_budget([_row("direct", None, 1.5, None), _row("proxy", 1.3, 2.1, 0.9)]) == []
    assert cpu_budget([_row("proxy", 1.3, 2.1, 0.9)]) == []
    assert [b.target for b in cpu_budget([_row("direct", 1.3, 1.5, None), _row("haproxy", 1.3, 1.6, None)])] \
        == ["direct"]


def test_the_table_shows_the_budget_and_dashes_what_the_direct_run_has_not():
    table = budget_table(cpu_budget([_row("direct", 1.3, 1.5, None), _row("proxy", 1.3, 2.1, 0.9, ratio=0.63)]))
    direct, proxy = table.splitlines()[2:]
    assert direct.split("|")[6].strip() == "–" and direct.split("|")[10].strip() == "–"
    assert [c.strip() for c in proxy.split("|")[4:11]] == ["1.3", "2.1", "0.9", "4.3", "0.65×", "0.63×", "1.3"]


def _sample(target: str, round_no: int, rps: float) -> Sample:
    return Sample(target, round_no, 16, "SET", 1000, rps)


def test_each_round_is_compared_with_the_direct_run_of_the_same_round():
    # the machine slows down by half in round 1: the medians' ratio moves, each round's does not
    samples = [_sample("direct", 0, 1000.0), _sample("proxy", 0, 900.0),
               _sample("direct", 1, 500.0), _sample("proxy", 1, 450.0),
               _sample("direct", 2, 1000.0), _sample("proxy", 2, 850.0)]
    direct, proxy = summarize(samples, ["direct", "proxy"], [16], ["SET"])
    assert direct.round_ratios == []
    assert proxy.round_ratios == pytest.approx([0.9, 0.9, 0.85])
    assert proxy.ratio == pytest.approx(850 / 1000)
    assert proxy.to_dict()["round_ratios"] == [0.9, 0.9, 0.85]
    row = markdown_table([direct, proxy]).splitlines()[3]
    assert [c.strip() for c in row.split("|")[5:7]] == ["0.85×", "0.85-0.90"]


def test_a_round_without_a_direct_run_has_no_ratio():
    samples = [_sample("direct", 0, 1000.0), _sample("proxy", 0, 800.0), _sample("proxy", 1, 700.0)]
    proxy = summarize(samples, ["direct", "proxy"], [16], ["SET"])[1]
    assert proxy.round_ratios == pytest.approx([0.8])
    assert markdown_table([proxy]).splitlines()[2].split("|")[6].strip() == "–"
