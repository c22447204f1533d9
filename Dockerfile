# syntax=docker/dockerfile:1
# meshproxy sidecar image, in two stages: the builder compiles the Cython fast
# path into a wheel (and fetches wheels of every dependency); the runtime
# image installs those wheels only, so it carries no compiler and no sources.
#
#   docker build -t meshproxy .
#   docker run --rm meshproxy --help

# ---- builder ------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# .dockerignore lets in only what the package is built from.
COPY . .

# Our wheel first (compiled here), then wheels of what it depends on, resolved
# from that wheel's own metadata so the list lives in pyproject.toml only.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip wheel --wheel-dir /wheels /wheels/meshproxy-*.whl

# ---- runtime ------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheels are mounted for this one step, so no layer keeps them.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels meshproxy

# 2102 is the proxy's uid: iptables-init skips this uid's outbound traffic so
# the proxy's own connections are not redirected back into it.
RUN groupadd --system --gid 2102 meshproxy \
    && useradd --system --uid 2102 --gid 2102 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin meshproxy
USER 2102

# outbound, inbound, admin
EXPOSE 4140 4143 4191

# The slim image has no curl; the interpreter is there anyway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4191/ready', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["meshproxy"]
CMD ["run"]
