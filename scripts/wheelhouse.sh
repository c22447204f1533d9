#!/usr/bin/env bash
# The offline image build's wheels: ./wheelhouse/ holds meshproxy's own wheel
# (the compiled fast path) and a wheel of every dependency, made here on the
# host so that `docker build --build-arg WHEELS=wheelhouse .` downloads nothing
# (the Dockerfile installs them with pip --no-index).
#
#   scripts/wheelhouse.sh
#
# Run it with the project's .venv (scripts/bootstrap.sh makes it; PYTHON=...
# picks another Python 3.11) on a machine of the image's kind: Debian 12,
# x86-64, so that the compiled modules and the binary wheels pip picks fit the
# image's Python 3.11 and glibc. Dependencies come from wherever pip is set up
# to find them (an index, a mirror, --find-links in pip.conf).
#
# The modules compiled in place by scripts/bootstrap.sh are reused when they
# are newer than their sources (seeded into build/, where the wheel build
# looks), so no second Cython compile is needed. Debug symbols are stripped
# from every compiled module in the wheelhouse (three quarters of their size).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$ROOT/wheelhouse"

note() { echo "wheelhouse: $*" >&2; }
die() { echo "wheelhouse: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "$PY not found: run scripts/bootstrap.sh first, or set PYTHON=/path/to/python3.11"
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); the image's is 3.11"
"$PY" -c 'import Cython, setuptools, wheel' 2>/dev/null \
    || die "$PY lacks Cython, setuptools or wheel (the build requirements): run scripts/bootstrap.sh"

# Seed build/lib.* with the in-place modules that are current.
build_lib="$("$PY" -c 'import sys, sysconfig; print("build/lib.%s-%s" % (sysconfig.get_platform(), sys.implementation.cache_tag))')"
suffix="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
seeded=0
while IFS= read -r pxd; do
    stem="${pxd%.pxd}"
    so="$stem$suffix"
    [ -f "$so" ] || continue
    src="$stem.py"
    [ -f "$stem.pyx" ] && src="$stem.pyx"
    if [ "$so" -nt "$pxd" ] && [ "$so" -nt "$src" ] && [ "$so" -nt setup.py ]; then
        mkdir -p "$build_lib/$(dirname "$so")"
        cp -p "$so" "$build_lib/$so"
        seeded=$((seeded + 1))
    fi
done < <(find proxy -name '*.pxd' | sort)
[ "$seeded" -gt 0 ] && note "reusing $seeded modules compiled in place"
# Generated C left in build/ by a build from before pyproject.toml excluded it
# would still be packed: never ship it.
[ -d "$build_lib" ] && find "$build_lib" \( -name '*.c' -o -name '*.html' \) -delete

rm -rf "$OUT"
mkdir -p "$OUT"
work="$(mktemp -d "${TMPDIR:-/tmp}/meshproxy-wheelhouse.XXXXXX")"
trap 'rm -rf "$work"' EXIT

note "building meshproxy's wheel"
mkdir -p "$work/built"
"$PY" -m pip wheel -q --no-build-isolation --no-deps --wheel-dir "$work/built" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; die "pip wheel . failed"; }
note "fetching the dependencies' wheels"
# With the injector extra's too: the control plane's image (meshproxy-controller) installs it.
own="$(ls "$work"/built/meshproxy-*.whl)"
"$PY" -m pip wheel -q --wheel-dir "$work/built" "$own[injector]" >"$work/deps.log" 2>&1 \
    || { cat "$work/deps.log" >&2; die "pip wheel of the dependencies failed"; }

has_modules() {
    "$PY" -c 'import sys, zipfile; sys.exit(not any(n.endswith(".so") for n in zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"
}
# Compiled modules without their debug symbols (ours, and uvloop's: 13 of its
# 14 MB): unpacked, stripped, packed again (wheel pack rewrites RECORD).
for whl in "$work"/built/*.whl; do
    if command -v strip >/dev/null && has_modules "$whl"; then
        rm -rf "$work/unpacked"
        "$PY" -m wheel unpack --dest "$work/unpacked" "$whl" >/dev/null
        find "$work/unpacked" -name '*.so' -exec strip --strip-debug {} +
        "$PY" -m wheel pack --dest-dir "$OUT" "$work"/unpacked/* >/dev/null
    else
        cp "$whl" "$OUT/"
    fi
done
note "$(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1), in $OUT"
