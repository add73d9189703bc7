"""redis-raft-proxy: the client-facing data path."""
__version__ = "0.1.0"
