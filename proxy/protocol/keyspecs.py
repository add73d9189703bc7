"""Which arguments of a command are keys, from `COMMAND` key specifications.

Redis 7 describes each command's keys as a list of specs (`COMMAND INFO`, element 8):
where the search begins (an index, or after a keyword) and how keys are found from
there (a range, or a count read from an argument). `key_positions` follows Redis'
own `getKeysUsingKeySpecs` (db.c), so the proxy routes by the same keys the server
checks, with no hand-written list. A spec whose begin or find is `unknown` (SORT's
STORE, MIGRATE's KEYS) makes the result incomplete: the caller must treat such a
command specially or refuse it in cluster mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reply_maps import as_map


@dataclass(frozen=True)
class KeySpec:
    begin: str                  # "index" | "keyword" | "unknown"
    index: int = 0              # begin = index: the first key's position
    keyword: bytes = b""        # begin = keyword: keys follow this argument
    startfrom: int = 0          # ... searched from here (negative: from the end, backwards)
    find: str = "range"         # "range" | "keynum" | "unknown"
    lastkey: int = 0            # range: last key relative to the first (negative: from the end)
    keystep: int = 1
    limit: int = 0              # range with lastkey < 0: only 1/limit of the remaining arguments
    keynumidx: int = 0          # keynum: the argument holding the count, relative to the begin
    firstkey: int = 1           # keynum: the first key, relative to the begin
    incomplete: bool = False    # Redis' INCOMPLETE flag: keys may hide elsewhere too


def _b(x) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


def parse_key_specs(raw: list) -> tuple[KeySpec, ...]:
    """The key specs of one `COMMAND INFO` entry (its element 8)."""
    out = []
    for item in raw or ():
        d = as_map(item)
        flags = {_b(f).upper() for f in d.get("flags", [])}
        bs, fk = as_map(d.get("begin_search", [])), as_map(d.get("find_keys", []))
        bspec, fspec = as_map(bs.get("spec", [])), as_map(fk.get("spec", []))
        begin, find = _b(bs.get("type", b"unknown")).decode(), _b(fk.get("type", b"unknown")).decode()
        out.append(KeySpec(begin=begin, index=int(bspec.get("index", 0)), keyword=_b(bspec.get("keyword", b"")),
                           startfrom=int(bspec.get("startfrom", 0)), find=find,
                           lastkey=int(fspec.get("lastkey", 0)), keystep=int(fspec.get("keystep", 1)),
                           limit=int(fspec.get("limit", 0)), keynumidx=int(fspec.get("keynumidx", 0)),
                           firstkey=int(fspec.get("firstkey", 1)), incomplete=b"INCOMPLETE" in flags))
    return tuple(out)


@dataclass(frozen=True)
class Keys:
    positions: tuple[int, ...]  # argument indexes (argv[0] is the command name), in spec order
    complete: bool              # False: some spec could not be followed (see the module doc)


def _begin(spec: KeySpec, argv: list[bytes]) -> int | None:
    argc = len(argv)
    if spec.begin == "index":
        return spec.index if spec.index < argc else None
    if spec.begin == "keyword":
        forward = spec.startfrom > 0
        i = spec.startfrom if forward else argc + spec.startfrom
        end, step = (argc - 1, 1) if forward else (0, -1)
        keyword = spec.keyword.upper()
        while 0 <= i < argc and (i <= end if forward else i >= end):
            if argv[i].upper() == keyword:
                return i + 1
            i += step
        return None
    return None


def key_positions(specs: tuple[KeySpec, ...], argv: list[bytes]) -> Keys | None:
    """The positions of the keys in `argv`; None when the arguments do not fit the
    specs (too few: Redis then answers an arity or syntax error itself, with no keys)."""
    argc = len(argv)
    found: list[int] = []
    complete = True
    for spec in specs:
        if spec.incomplete:
            complete = False
        first = _begin(spec, argv)
        if first is None:
            if spec.begin not in ("index", "keyword"):
                complete = False
            continue
        if spec.find == "range":
            if spec.lastkey >= 0:
                last = first + spec.lastkey
            elif spec.limit <= 1:
                last = argc + spec.lastkey
            else:
                last = first + ((argc - first) // spec.limit + spec.lastkey)
            step = spec.keystep
        elif spec.find == "keynum":
            if first + spec.keynumidx >= argc:
                return None
            try:
                numkeys = int(argv[first + spec.keynumidx])
            except ValueError:
                return None
            if numkeys < 0:
                return None
            first += spec.firstkey
            last = first + (numkeys - 1) * spec.keystep
            step = spec.keystep
            if numkeys == 0:
                continue
        else:
            complete = False
            continue
        if step <= 0 or last >= argc or last < first:
            return None
        found.extend(range(first, last + 1, step))
    return Keys(tuple(found), complete)
