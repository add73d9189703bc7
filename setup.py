"""Builds the optional C parts: the speedups (the proxy falls back to pure Python without
them) and the C data plane (config `dataplane = "c"` then says it is missing)."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("proxy.protocol._speedups", ["proxy/protocol/_speedups.c"], optional=True, extra_compile_args=["-O2"],
              depends=["proxy/protocol/resp_scan.h"]),
    # the C data plane (dataplane = "c"): Linux only (epoll, eventfd)
    Extension("proxy.dataplane._fastpath", ["proxy/dataplane/_fastpath.c"], optional=True,
              depends=["proxy/protocol/resp_scan.h"],
              extra_compile_args=["-O2", "-std=gnu11"], extra_link_args=["-pthread"]),
])
