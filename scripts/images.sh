#!/usr/bin/env bash
# Build the three images with BuildKit: meshproxy:VERSION (Dockerfile; the
# sidecar), meshproxy-init:VERSION (iptables-init/Dockerfile) and
# meshproxy-controller:VERSION (Dockerfile with the injector's libraries: the
# identity issuer and the webhook that `meshproxy install` deploys).
#
#   scripts/images.sh                          online: the builds fetch what they need
#   scripts/images.sh --offline                nothing downloaded by the builds: the
#                                              wheels are made on this host
#                                              (scripts/wheelhouse.sh) and the init
#                                              image's .deb files come from
#                                              scripts/local-base.sh's cache
#   scripts/images.sh --offline --local-base   also make the base images locally
#                                              (no registry at all)
#
# The engine is the one the docker client reaches (DOCKER_HOST). DOCKER=/path
# picks the client; by default the first of `docker`, /usr/bin/docker that can
# build with BuildKit (a client from 23.0 on needs the buildx plugin for that;
# Debian 12's docker.io client does it itself).
set -euo pipefail
cd "$(dirname "$0")/.."

note() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

offline=0 local_base=0
for arg in "$@"; do
    case "$arg" in
        --offline) offline=1 ;;
        --local-base) local_base=1 ;;
        *) die "unknown argument: $arg (--offline, --local-base)" ;;
    esac
done
[ "$local_base" -eq 0 ] || [ "$offline" -eq 1 ] || die "--local-base goes with --offline"

# can_build CLIENT: CLIENT can run `docker build` with BuildKit.
can_build() {
    "$1" buildx version >/dev/null 2>&1 && return 0
    local major
    major="$("$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)" || return 1
    [ -n "$major" ] && [ "$major" -lt 23 ]
}
pick_docker() {
    local candidate
    for candidate in ${DOCKER:-} docker /usr/bin/docker; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if can_build "$candidate"; then command -v "$candidate"; return 0; fi
    done
    die "no docker client that builds with BuildKit (install Debian's docker.io, or the buildx plugin; or set DOCKER=)"
}
DOCKER="$(pick_docker)"
export DOCKER DOCKER_BUILDKIT=1

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
[ -n "$VERSION" ] || die "no version in pyproject.toml"

proxy_args=() init_args=()
if [ "$offline" -eq 1 ]; then
    ./scripts/wheelhouse.sh
    if [ "$local_base" -eq 1 ]; then ./scripts/local-base.sh; else ./scripts/local-base.sh --no-import; fi
    rm -rf iptables-init/debs
    cp -r "${MESHPROXY_BASE_CACHE:-/var/cache/meshproxy/docker-base}/iptables-init-debs" iptables-init/debs
    # No network in the builds' RUN steps: offline means it.
    proxy_args=(--build-arg WHEELS=wheelhouse --network=none)
    init_args=(--build-arg DEBS=local --network=none)
fi

# build TAG CONTEXT ARGS...: one image, timed.
build() {
    local tag="$1" context="$2" start log
    shift 2
    start="$(date +%s)"
    log="$(mktemp "${TMPDIR:-/tmp}/meshproxy-images.XXXXXX")"
    if ! "$DOCKER" build --progress=plain "$@" -t "$tag" "$context" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "building $tag failed"
    fi
    rm -f "$log"
    note "built $tag in $(( $(date +%s) - start ))s, $("$DOCKER" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}
build "meshproxy:$VERSION" . "${proxy_args[@]}"
build "meshproxy-init:$VERSION" iptables-init "${init_args[@]}"
build "meshproxy-controller:$VERSION" . "${proxy_args[@]}" --build-arg "EXTRAS=[injector]"
