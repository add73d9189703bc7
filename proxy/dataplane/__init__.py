"""The C data plane (config `dataplane = "c"`): plain clients forwarded by a thread of the
C extension (`_fastpath.c`), every decision that is not per command kept in Python
(`plane.py`: which sessions go, the permit they are forwarded under, the sessions handed
back; `rules.py`: the pure parts of those decisions)."""
