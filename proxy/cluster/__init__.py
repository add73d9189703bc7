"""Cluster mode (issue 14), built up in pure pieces: hash slots, key positions from
`COMMAND` key specs, slot ownership. Nothing here does I/O."""
