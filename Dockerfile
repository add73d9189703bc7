# syntax=docker/dockerfile:1
#
# redis-raft-proxy image: a slim Python base with the project in a venv.
#   docker build -t redis-raft-proxy:0.1.0 .
#   docker run --rm redis-raft-proxy:0.1.0 --help
#   docker run --rm -e REDIS_RAFT_PROXY_REDIS_NODES=redis-a:6379,redis-b:6379 -p 6380:6380 -p 8000:8000 redis-raft-proxy:0.1.0
#
# Stage 1 installs the dependencies pinned, with their hashes, in
# requirements.lock (scripts/lock.sh writes it) into /opt/venv, then builds the
# project's wheel, C extensions proxy/protocol/_speedups.c and the data plane's
# proxy/dataplane/_fastpath.c (the default forwarding thread) included (gcc), and installs
# it without resolving anything; `pip check` fails the build when the lock no
# longer satisfies pyproject.toml. Stage 2 copies only that venv and the
# container defaults into a fresh slim image: no compiler, headers or pip.
#
# Defaults for a container (config.container.toml, the CMD's --config): listen
# on 0.0.0.0, no Redis node list (127.0.0.1 is the container itself: set
# REDIS_RAFT_PROXY_REDIS_NODES), Raft state in /data, JSON logs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml setup.py README.md LICENSE ./
COPY proxy/ proxy/
COPY raft/ raft/
COPY health/ health/
COPY config.container.toml /etc/redis-raft-proxy/container.toml
# setup.py marks the C extensions optional; in the image they must be there,
# hence the import check. pip itself is not needed at run time.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
 && /opt/venv/bin/pip check \
 && cd / && /opt/venv/bin/python -c "import proxy.protocol._speedups, proxy.dataplane._fastpath" \
 && /opt/venv/bin/pip uninstall -y pip setuptools wheel

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="redis-raft-proxy" \
      org.opencontainers.image.description="One stable Redis endpoint over a master-replica set; the proxies agree on the master through Raft."
RUN groupadd --system --gid 10001 proxy \
 && useradd --system --uid 10001 --gid proxy --home-dir /data --no-create-home --shell /usr/sbin/nologin proxy \
 && mkdir -p /data && chown proxy:proxy /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /etc/redis-raft-proxy /etc/redis-raft-proxy
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6380 8000 26379
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["redis-raft-proxy"]
CMD ["run", "--config", "/etc/redis-raft-proxy/container.toml"]
