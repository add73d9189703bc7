"""Builds the optional C speedups; the proxy falls back to pure Python without them."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("proxy.protocol._speedups", ["proxy/protocol/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
