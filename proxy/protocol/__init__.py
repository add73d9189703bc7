"""What the proxy knows of the Redis protocol: RESP framing (`resp`, with the C
speedups of `_speedups.c` where they are built), the command table (read, write,
admin, blocking, from `COMMAND`) and the key positions of each command (from its key
specs)."""
