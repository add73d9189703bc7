"""health.cluster.sync_hold: holding an emptied cluster master's full syncs, without sockets (a fake
CONFIG GET / CONFIG SET that keeps a node's settings in a dict)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from health.cluster.sync_hold import (
    DELAY,
    HOLD_S,
    config_values,
    held_delay,
    hold,
    hold_refusal,
    original_delay,
    release,
)

log = logging.getLogger("test")


class FakeNode:
    """CONFIG GET (flat list reply, bytes, as RESP2 gives it) and CONFIG SET on a dict."""

    def __init__(self, **config: str) -> None:
        self.config = {"repl-diskless-sync": "yes", DELAY: "5", "repl-diskless-sync-max-replicas": "0"}
        self.config.update({k.replace("_", "-"): v for k, v in config.items()})
        self.sets: list[tuple[str, str]] = []

    async def command(self, *args):
        if args[:2] == ("CONFIG", "GET"):
            key = args[2]
            return [key.encode(), self.config[key].encode()] if key in self.config else []
        if args[:2] == ("CONFIG", "SET"):
            self.sets.append((args[2], args[3]))
            self.config[args[2]] = args[3]
            return b"OK"
        raise AssertionError(f"unexpected command {args}")


def run(coro):
    return asyncio.run(coro)


def test_a_held_delay_remembers_the_original():
    for d in (0, 5, 60, 3600):
        assert held_delay(d) > 2**29
        assert original_delay(held_delay(d)) == d
    assert held_delay(5) < 2**31    # Redis' limit for the setting
    assert original_delay(5) is None and original_delay(HOLD_S - 1) is None


def test_config_values_read_both_reply_shapes():
    assert config_values([b"repl-diskless-sync-delay", b"5"]) == {DELAY: "5"}
    assert config_values({"Repl-Diskless-Sync": "yes"}) == {"repl-diskless-sync": "yes"}


def test_only_a_delayed_diskless_sync_can_be_held():
    assert hold_refusal({"repl-diskless-sync": "yes", "repl-diskless-sync-max-replicas": "0"}) is None
    assert hold_refusal({}) is None                     # Redis before 7: no max-replicas setting
    assert "disk-based" in hold_refusal({"repl-diskless-sync": "no"})
    assert "max-replicas is 2" in hold_refusal({"repl-diskless-sync-max-replicas": "2"})


def test_hold_raises_the_delay_once_and_release_gives_it_back():
    node = FakeNode()
    assert run(hold(node.command, "n:1", log)) is True
    assert node.config[DELAY] == str(HOLD_S + 5)
    assert run(hold(node.command, "n:1", log)) is True      # already held: left as it is
    assert node.sets == [(DELAY, str(HOLD_S + 5))]
    assert run(release(node.command, "n:1", log)) is True
    assert node.config[DELAY] == "5"
    assert run(release(node.command, "n:1", log)) is False  # nothing held: nothing set
    assert len(node.sets) == 2


@pytest.mark.parametrize("config", [{"repl_diskless_sync": "no"}, {"repl_diskless_sync_max_replicas": "1"}])
def test_a_node_that_cannot_be_held_is_left_alone(config, caplog):
    node = FakeNode(**config)
    with caplog.at_level(logging.ERROR):
        assert run(hold(node.command, "n:1", log)) is False
    assert node.sets == []
    assert "event=sync_hold_impossible" in caplog.text


def test_a_node_that_restarted_forgets_the_hold_and_is_held_again():
    node = FakeNode()
    run(hold(node.command, "n:1", log))
    node.config[DELAY] = "5"                                # restarted: back to its file's value
    assert run(release(node.command, "n:1", log)) is False
    assert run(hold(node.command, "n:1", log)) is True
    assert node.config[DELAY] == str(HOLD_S + 5)
