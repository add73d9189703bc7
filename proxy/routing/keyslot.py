"""Redis Cluster's key -> hash slot: CRC16 (XMODEM) of the key, or of its hash tag,
modulo 16384 (the cluster specification, "Keys distribution model")."""

from __future__ import annotations

from binascii import crc_hqx

from ..protocol.resp import ProtocolError, command_args, parse_command, speedup

SLOTS = 16384


def _table() -> list[int]:
    out = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        out.append(crc & 0xFFFF)
    return out


_CRC16 = _table()


def crc16_py(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM): binascii's C implementation of exactly this CRC (crc16_py is
    the readable one, and the test of it)."""
    return crc_hqx(data, 0)


def hash_tag(key: bytes) -> bytes:
    """The part of `key` that is hashed: between the first '{' and the first '}' after
    it, when that is not empty; else the whole key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key: bytes) -> int:
    return crc16(hash_tag(key)) % SLOTS


def ranges_text(ranges: tuple[tuple[int, int], ...]) -> str:
    """`0-5460,5462` (Redis' own notation for slot ranges)."""
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges) or "none"


def key_slots_py(buf: bytes | bytearray, start: int, end: int, names) -> list[int] | None:
    """[end0, slot0, end1, slot1, ...] for the commands in buf[start:end]: where each ends
    and the hash slot of its argument 1; None as soon as one is not a command of `names`
    (lower-case; those whose one key is argument 1) with that argument."""
    out: list[int] = []
    run = buf[:end]
    pos = start
    while pos < end:
        try:
            res = parse_command(run, pos, end, end)
        except ProtocolError:
            return None
        if res is None or len(res) < 4 or res[3] < 2 or res[1] not in names:
            return None
        out += (res[0], key_slot(command_args(buf, res[2], res[0])[0]))
        pos = res[0]
    return out


MAX_BATCHES = 64        # shards in one pipelined run (as _speedups.c's)


def shard_batches_py(buf: bytes | bytearray, start: int, end: int, names, owners, migrating) -> list | None:
    """The commands in buf[start:end] by the shard that serves their key, in the order each
    shard first appears: [(owner, positions, data), ...] with `owner` the shard's index in
    `owners` (slot -> index, -1 for none), `positions` the indexes of its commands in the
    run and `data` their bytes; None when one is not a command of `names` with its key, or
    its slot is served by no shard or being migrated (`migrating`). Cluster mode sends a
    pipeline as one batch per shard by these (`ClusterSession._route_group`); the reference
    for the C version in protocol/_speedups.c."""
    found = key_slots_py(buf, start, end, names)
    if found is None:
        return None
    batches: dict[int, tuple[int, list[int], list[bytes]]] = {}
    pos = start
    for i in range(len(found) // 2):
        cmd_end, slot = found[2 * i], found[2 * i + 1]
        owner = owners[slot]
        if owner < 0 or migrating[slot]:
            return None
        batch = batches.setdefault(owner, (owner, [], []))
        batch[1].append(i)
        batch[2].append(bytes(buf[pos:cmd_end]))
        pos = cmd_end
    if len(batches) > MAX_BATCHES:
        return None
    return [(owner, positions, b"".join(parts)) for owner, positions, parts in batches.values()]


shard_batches = speedup("shard_batches", shard_batches_py)
