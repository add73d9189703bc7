"""What the proxy knows of the Redis protocol beyond framing: the command table
(read, write, admin, blocking, from `COMMAND`) and the key positions of each command
(from its key specs)."""
