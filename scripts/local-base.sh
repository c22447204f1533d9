#!/usr/bin/env bash
# Local stand-ins for the base images the Dockerfiles start FROM, for a
# Docker engine that reaches no registry: built from Debian packages with
# debootstrap, imported with `docker import` and tagged with the very names
# the Dockerfiles and examples/compose use, so those build and run unchanged.
#
#   scripts/local-base.sh             build (or reuse) the root file systems, import and tag them
#   scripts/local-base.sh --no-import only build (or reuse) the cache
#
# Tags made (Debian 12 "bookworm", the release the official images are based on):
#   debian:bookworm-slim                        minbase (what the official slim image is)
#   python:3.11-slim-bookworm, python:3.11-slim minbase + Debian's python3 (3.11), pip,
#                                               python -> python3; pip may install
#                                               system-wide, as in the official image
# and, for the offline build of iptables-init, the .deb files its Dockerfile
# installs (iptables, python3-minimal and what they need beyond minbase),
# fetched in the same minbase so that they fit debian:bookworm-slim exactly:
# $CACHE/iptables-init-debs/ (scripts/images.sh copies them into the build context).
#
# Needs root, debootstrap, and a Debian mirror (MESHPROXY_DEBIAN_MIRROR, else
# debootstrap's default). The results are cached in $MESHPROXY_BASE_CACHE
# (default /var/cache/meshproxy/docker-base), keyed by this script's
# contents: a second run only imports (a few seconds). Docker is reached as
# the docker client reaches it (DOCKER_HOST); DOCKER=/path/to/docker picks the client.
set -euo pipefail

SUITE=bookworm
PYTHON_PACKAGES=(python3 python3-pip python-is-python3 ca-certificates)
INIT_PACKAGES=(iptables python3-minimal)
CACHE="${MESHPROXY_BASE_CACHE:-/var/cache/meshproxy/docker-base}"
MIRROR="${MESHPROXY_DEBIAN_MIRROR:-}"
DOCKER="${DOCKER:-docker}"

note() { echo "local-base: $*" >&2; }
die() { echo "local-base: error: $*" >&2; exit 1; }

do_import=1
for arg in "$@"; do
    case "$arg" in
        --no-import) do_import=0 ;;
        *) die "unknown argument: $arg (--no-import only)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "debootstrap and chroot need root"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

recipe="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"

# trim ROOT: what the official slim images leave out too (docs, man pages,
# locales, apt's downloaded lists and packages).
trim() {
    local root="$1"
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
    # Keep copyright files: licences travel with the binaries.
}

# pack ROOT FILE: the root file system as a tar stream for `docker import`.
pack() {
    tar --numeric-owner --xattrs -C "$1" -cf "$2.tmp" . && mv "$2.tmp" "$2"
}

# remove_work DIR: unmount whatever a failed debootstrap left mounted in the
# chroot (its /proc, /sys), deepest first, then delete the directory.
remove_work() {
    local mount
    awk -v dir="$1/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mount; do
        umount -l "$mount" || true
    done
    rm -rf "$1"
}

build_cache() {
    local work root
    work="$(mktemp -d "${TMPDIR:-/tmp}/meshproxy-local-base.XXXXXX")"
    trap 'remove_work "$work"' EXIT
    root="$work/root"
    note "debootstrap $SUITE (minbase) into $root"
    local args=(--variant=minbase "$SUITE" "$root")
    [ -n "$MIRROR" ] && args+=("$MIRROR")
    debootstrap "${args[@]}" >"$work/debootstrap.log" 2>&1 || { cat "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # Services never start inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    local apt=(chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o APT::Install-Recommends=false)
    "${apt[@]}" update >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get update in the chroot failed"; }

    # iptables-init's packages, relative to minbase: fetched, not installed
    # (debootstrap's own packages are cleaned out of the cache first).
    mkdir -p "$work/debs"
    "${apt[@]}" clean
    "${apt[@]}" install --download-only "${INIT_PACKAGES[@]}" \
        >>"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "downloading ${INIT_PACKAGES[*]} failed"; }
    mv "$root"/var/cache/apt/archives/*.deb "$work/debs/"

    rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
    trim "$root"
    note "packing debian:$SUITE-slim"
    pack "$root" "$work/debian.tar"

    cp /etc/resolv.conf "$root/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    "${apt[@]}" update >>"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get update in the chroot failed"; }
    note "installing ${PYTHON_PACKAGES[*]}"
    "${apt[@]}" install "${PYTHON_PACKAGES[@]}" >>"$work/apt.log" 2>&1 \
        || { cat "$work/apt.log" >&2; die "installing ${PYTHON_PACKAGES[*]} failed"; }
    local version
    version="$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "$version" = "3.11" ] || die "Debian $SUITE's python3 is $version, not 3.11"
    # The official image's interpreter is its own, so pip installs into it
    # freely; Debian marks its interpreter as managed by apt (PEP 668).
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
    trim "$root"
    note "packing python:3.11-slim-$SUITE"
    pack "$root" "$work/python.tar"

    mkdir -p "$CACHE"
    rm -rf "$CACHE/iptables-init-debs"
    mv "$work/debs" "$CACHE/iptables-init-debs"
    mv "$work/debian.tar" "$CACHE/debian-$SUITE-slim.tar"
    mv "$work/python.tar" "$CACHE/python-3.11-slim-$SUITE.tar"
    echo "$recipe" >"$CACHE/recipe"
    remove_work "$work"
    trap - EXIT
}

if [ -f "$CACHE/recipe" ] && [ "$(cat "$CACHE/recipe")" = "$recipe" ]; then
    note "reusing $CACHE"
else
    build_cache
fi

[ "$do_import" -eq 1 ] || exit 0

# import FILE TAG...: docker import once, then the other tags.
import() {
    local file="$1" first="$2" tag
    shift 2
    "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "CMD [\"${CMD_OF_IMAGE}\"]" \
        --message "meshproxy scripts/local-base.sh: Debian $SUITE from debootstrap" \
        "$file" "$first" >/dev/null
    for tag in "$@"; do "$DOCKER" tag "$first" "$tag"; done
    note "imported $first${*:+ (also $*)}"
}
CMD_OF_IMAGE=bash import "$CACHE/debian-$SUITE-slim.tar" "debian:$SUITE-slim"
CMD_OF_IMAGE=python3 import "$CACHE/python-3.11-slim-$SUITE.tar" "python:3.11-slim-$SUITE" python:3.11-slim
