# meshproxy sidecar image. The runtime image installs wheels only, so it
# carries no compiler and no sources; where the wheels come from is the one
# choice (build argument WHEELS):
#
#   builder    (default) the builder stage compiles the Cython fast path into a
#              wheel and fetches wheels of every dependency (needs the Debian
#              mirror and PyPI from inside the build):
#                DOCKER_BUILDKIT=1 docker build -t meshproxy:0.1.0 .
#   wheelhouse offline: ./wheelhouse/, made on the host by scripts/wheelhouse.sh
#              (our wheel and every dependency's), installed with --no-index; the
#              builder stage is skipped and nothing is downloaded:
#                DOCKER_BUILDKIT=1 docker build --build-arg WHEELS=wheelhouse -t meshproxy:0.1.0 .
#
# The image is the runtime stage flattened into one layer, trimmed of pip and
# other install-time files (see there): about 30 MB less than the base plus
# the wheels, at the cost of sharing no layer with the base image.
#
# Needs BuildKit (RUN --mount), with the Dockerfile frontend built into the
# engine: no syntax line, so no frontend image is pulled. Where no registry
# has python:3.11-slim-bookworm, scripts/local-base.sh makes it from Debian.
#
#   docker run --rm meshproxy:0.1.0 --help

ARG WHEELS=builder
# "" for the sidecar; "[injector]" for the control plane's image (meshproxy-controller:
# the identity issuer and the injector webhook, which needs aiohttp).
ARG EXTRAS=""

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
    && pip wheel --wheel-dir /wheels "$(ls /wheels/meshproxy-*.whl)[injector]"

# ---- wheelhouse: the offline source of the same wheels -----------------------
FROM scratch AS wheelhouse
COPY wheelhouse/ /wheels/

# The stage the runtime takes its wheels from: builder or wheelhouse. Only the
# stages it needs are built.
FROM ${WHEELS} AS wheels

# ---- runtime: installed, then trimmed -------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
ARG EXTRAS

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheels are mounted for this one step, so no layer keeps them.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "meshproxy${EXTRAS}"

# What only installing or developing needs, removed here and left behind by
# the flattening below (removing files in a later layer would not shrink the
# image): pip, setuptools and wheel (in the official image's site-packages or
# Debian's dist-packages, wherever the base has them), stdlib parts no running
# proxy imports (distutils, lib2to3, pydoc's topics, idle, tkinter, tests,
# ensurepip's bundled wheels), and glibc's iconv charset modules (Python has
# its own codecs; UTF-8 and ASCII are built into glibc). The image is a
# runtime: to add Python packages, build FROM python:3.11-slim-bookworm.
RUN set -eu; \
    stdlib="$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"; \
    for dir in /usr/local/lib/python3.11/site-packages /usr/local/lib/python3.11/dist-packages \
               /usr/lib/python3/dist-packages; do \
        rm -rf "$dir"/pip "$dir"/pip-* "$dir"/setuptools "$dir"/setuptools-* "$dir"/pkg_resources \
               "$dir"/wheel "$dir"/wheel-* "$dir"/_distutils_hack "$dir"/distutils-precedence.pth; \
    done; \
    rm -f /usr/local/bin/pip* /usr/local/bin/wheel /usr/bin/pip*; \
    for part in distutils lib2to3 pydoc_data idlelib tkinter turtledemo test ensurepip; do \
        rm -rf "${stdlib:?}/$part"; \
    done; \
    rm -rf /usr/lib/*-linux-gnu/gconv; \
    python -c 'import proxy.cli, proxy.app, proxy.discovery.k8s, proxy.identity.client, cryptography.x509, uvloop, OpenSSL'

# 2102 is the proxy's uid: iptables-init skips this uid's outbound traffic so
# the proxy's own connections are not redirected back into it.
RUN groupadd --system --gid 2102 meshproxy \
    && useradd --system --uid 2102 --gid 2102 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin meshproxy

# ---- the image: the runtime's file system as one layer -----------------------
FROM scratch
COPY --from=runtime / /

# The base image's environment does not carry over a COPY: stated again.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 2102

# outbound, inbound, admin
EXPOSE 4140 4143 4191

# The slim image has no curl; the interpreter is there anyway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4191/ready', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["meshproxy"]
CMD ["run"]
