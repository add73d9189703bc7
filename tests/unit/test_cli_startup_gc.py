"""`run` starts with Python's cyclic garbage collector paused and always gives it back:
frozen once serving, or as it was when `run` returns or fails before serving. The
time it saves is measured by benchmarks (docs/performance.md), not here."""

from __future__ import annotations

import gc

import pytest

from proxy.process import cli


@pytest.fixture
def gc_state():
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    yield frozen
    gc.unfreeze()       # (what a test froze goes back to the collector's generations)
    gc.enable()


def test_run_pauses_the_collector_while_starting_then_freezes_what_lives(monkeypatch, gc_state):
    seen = {}

    def fake_run(args):
        seen["enabled"] = gc.isenabled()
        seen["node"] = args.cfg_node
        return 0

    monkeypatch.setattr(cli, "cmd_run", fake_run)
    assert cli.main(["run", "--node", "a"]) == 0
    assert seen == {"enabled": False, "node": "a"}
    assert gc.isenabled()
    assert gc.get_freeze_count() > gc_state


@pytest.mark.parametrize("fails", [SystemExit(2), RuntimeError("boom")])
def test_run_gives_the_collector_back_when_it_ends_early(monkeypatch, gc_state, fails):
    def fake_run(args):
        assert not gc.isenabled()
        raise fails

    monkeypatch.setattr(cli, "cmd_run", fake_run)
    with pytest.raises(type(fails)):
        cli.main(["run", "--node", "a"])
    assert gc.isenabled()


def test_a_bad_run_flag_gives_the_collector_back(gc_state, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--no-such-flag"])
    assert "--no-such-flag" in capsys.readouterr().err
    assert gc.isenabled()


def test_other_commands_leave_the_collector_alone(monkeypatch, gc_state):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert gc.isenabled() and gc.get_freeze_count() == gc_state


def test_a_collector_the_caller_disabled_stays_disabled(monkeypatch, gc_state):
    monkeypatch.setattr(cli, "cmd_run", lambda args: 0)
    gc.disable()
    cli.main(["run", "--node", "a"])
    assert not gc.isenabled() and gc.get_freeze_count() == gc_state
