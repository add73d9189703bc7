"""Valkey 9's atomic slot migration, the pure part: `CLUSTER GETSLOTMIGRATIONS` replies
(shapes as valkey-server 9.1 sends them, RESP2 and RESP3), which job is ours, and the
slots a node serves in its own `CLUSTER NODES` line."""

from __future__ import annotations

import asyncio

import pytest

from health.migration.atomic import (
    KEY_COUNT_BATCH,
    SlotJob,
    key_counts,
    myself_slots,
    new_export,
    parse_jobs,
    parse_slot_ranges,
    running_export,
)

SRC, DST = "9ddf02199784953a26356a79d8b8b99fbb307aff", "4fe926c63d125b947a764d3a7363b17038867cae"


def _entry(name: str, state: str, ranges: str = "3300-3300", operation: str = "EXPORT", message: str = "",
           ack: int = 1795961739) -> list:
    """One job as RESP2 gives it (flat name/value pairs), the fields valkey-server 9.1 sends."""
    return ["name", name, "operation", operation, "slot_ranges", ranges, "target_node", DST, "source_node", SRC,
            "create_time", 1795961739, "last_update_time", 1795961739, "last_ack_time", ack, "state", state,
            "message", message, "cow_size", 0, "remaining_repl_size", 0]


def test_slot_ranges_of_a_job():
    assert parse_slot_ranges("0-9 20-29") == ((0, 9), (20, 29))
    assert parse_slot_ranges("3300-3300") == ((3300, 3300),)
    assert parse_slot_ranges("7") == ((7, 7),)
    assert parse_slot_ranges("") == ()


def test_resp2_reply_with_bytes_parses_to_jobs():
    reply = [[x.encode() if isinstance(x, str) else x for x in _entry("b" * 40, "success", "0-9 20-29")],
             _entry("a" * 40, "failed", message="Received error during handshake to target: -NOAUTH "
                                                "Authentication required.\r\n")]
    new, old = parse_jobs(reply)
    assert new == SlotJob("b" * 40, "EXPORT", ((0, 9), (20, 29)), SRC, DST, "success", "", new.progress)
    assert new.finished and new.slots() == set(range(10)) | set(range(20, 30))
    assert old.state == "failed" and old.message == "Received error during handshake to target: -NOAUTH " \
                                                    "Authentication required."


def test_resp3_maps_parse_the_same_as_resp2():
    flat = _entry("c" * 40, "cancelled", operation="IMPORT")
    as_map = dict(zip(flat[0::2], flat[1::2]))
    assert parse_jobs([as_map]) == parse_jobs([flat])
    assert parse_jobs([]) == [] and parse_jobs(None) == []


@pytest.mark.parametrize("state,finished", [("connecting", False), ("waiting-to-snapshot", False),
                                            ("failover-granted", False), ("success", True), ("failed", True),
                                            ("cancelled", True)])
def test_only_success_failed_and_cancelled_end_a_job(state, finished):
    assert parse_jobs([_entry("n" * 40, state)])[0].finished is finished


def test_progress_changes_with_state_or_acks_only():
    a, b, c = (parse_jobs([e])[0] for e in (_entry("n" * 40, "snapshotting"), _entry("n" * 40, "snapshotting"),
                                            _entry("n" * 40, "snapshotting", ack=1795961740)))
    assert a.progress == b.progress and a.progress != c.progress


def test_a_running_export_of_these_slots_is_found_finished_ones_and_imports_are_not():
    jobs = parse_jobs([_entry("i" * 40, "receiving-snapshot", "0-99", operation="IMPORT"),
                       _entry("f" * 40, "failed", "0-99"),
                       _entry("r" * 40, "snapshotting", "50-60 70-80")])
    assert running_export(jobs, {75}).name == "r" * 40
    assert running_export(jobs, {10}) is None


def test_the_new_job_is_the_one_not_listed_before_for_this_target_and_ranges():
    before = parse_jobs([_entry("o" * 40, "success", "0-9")])
    after = parse_jobs([_entry("n" * 40, "connecting", "0-9"), *[_entry("o" * 40, "success", "0-9")]])
    assert new_export(before, after, DST, ((0, 9),)).name == "n" * 40
    assert new_export(before, after, SRC, ((0, 9),)) is None
    assert new_export(before, after, DST, ((0, 8),)) is None


NODES = ("e5f1 127.0.0.1:7001@17001 master - 0 1 2 connected 8192-16383\n"
         "a1b2 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-99 3300 4000-4001 [101->-e5f1] [102-<-e5f1]\n"
         "c3d4 127.0.0.1:7002@17002 slave a1b2 0 1 1 connected\n")


def test_myself_slots_are_the_nodes_own_line_without_migrating_marks():
    assert myself_slots(NODES) == set(range(100)) | {3300, 4000, 4001}
    assert myself_slots("a1b2 127.0.0.1:7000@17000 myself,master - 0 0 1 connected\n") == set()
    with pytest.raises(ValueError):
        myself_slots(NODES.replace("myself,", ""))


class _CountingClient:
    """A client whose pipelines answer CLUSTER COUNTKEYSINSLOT with the slot number, and
    which records how many commands each pipeline carried."""

    def __init__(self) -> None:
        self.pipelines: list[int] = []

    def pipeline(self, transaction: bool = False):
        client, commands = self, []

        class Pipe:
            def execute_command(self, *args):
                commands.append(args)

            async def execute(self, raise_on_error: bool = True):
                client.pipelines.append(len(commands))
                return [str(args[2]).encode() for args in commands]
        return Pipe()


def test_key_counts_of_every_slot_go_in_pipelines_small_enough_not_to_hold_the_loop():
    """16,384 commands in one redis-py pipeline held the event loop for 170 ms (a CI run's
    Raft leader lost its leadership during `cluster rebalance --by keys`)."""
    client = _CountingClient()
    slots = list(range(16384))
    assert asyncio.run(key_counts(client, slots)) == slots
    assert max(client.pipelines) <= KEY_COUNT_BATCH and sum(client.pipelines) == 16384
    assert asyncio.run(key_counts(client, [])) == []
