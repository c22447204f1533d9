#!/usr/bin/env bash
# Make this Debian machine ready to run meshproxy from the source tree: Debian
# packages, the project's virtualenv (.venv, Python >= 3.11) with the package
# installed editable, and the compiled modules built in place (proxy/**/*.so).
#
#   scripts/bootstrap.sh          what `meshproxy demo` needs
#   scripts/bootstrap.sh --test   also the tools the test suite drives
#
# Idempotent: a run that finds everything in place installs nothing and prints
# nothing. Steps that do work print one line each; a tool's own output is kept
# in a log that is shown only if the step fails. May also be sourced; it then
# runs in a subshell and leaves the caller's shell options alone.
# PYTHON=/path/to/python3.x picks the interpreter for a new .venv.

bootstrap_main() {
    set -euo pipefail
    local want_test=0 arg
    for arg in "$@"; do
        case "$arg" in
            --test) want_test=1 ;;
            *) echo "bootstrap: unknown argument: $arg" >&2; return 2 ;;
        esac
    done

    ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    VENV="$ROOT/.venv"
    VENV_PY="$VENV/bin/python"
    # Tools live in sbin for non-root users too; look there when checking.
    export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
    export DEBIAN_FRONTEND=noninteractive
    cd "$ROOT"

    # One bootstrap at a time per checkout (demo.sh and test.sh may race);
    # the lock is on the scripts/ directory itself so no file is left behind.
    exec 9<"$ROOT/scripts"
    flock 9

    ensure_debian_packages "$want_test"
    ensure_venv
    ensure_python_packages "$want_test"
    if [ "$want_test" -eq 1 ]; then ensure_node_packages; fi
    ensure_fastpath
}

note() { echo "bootstrap: $*" >&2; }

die() { echo "bootstrap: error: $*" >&2; exit 1; }

# run_logged DESCRIPTION CMD...: run quietly; on failure show the output.
run_logged() {
    local what="$1" log status=0
    shift
    log="$(mktemp "${TMPDIR:-/tmp}/meshproxy-bootstrap.XXXXXX")"
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        echo "bootstrap: $what failed (exit $status): $*" >&2
        cat "$log" >&2
        rm -f "$log"
        exit "$status"
    fi
    rm -f "$log"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "not root and no sudo: cannot run: $*"
    fi
}

have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }
have_cmd() { command -v "$1" >/dev/null 2>&1; }

# Each entry: package, then the commands that show it is there (none: ask dpkg).
BASE_PACKAGES=(
    "python3-venv"
    "python3-dev"
    "build-essential"
)
TEST_PACKAGES=(
    "nginx-light nginx"
    "libnginx-mod-stream"
    "haproxy haproxy"
    "curl curl"
    "wrk wrk"
    "nghttp2-client nghttp h2load"
    "iproute2 ip"
    "iptables iptables"
    "openssl openssl"
    "libssl-dev"
    "procps ps pgrep"
    "docker-compose docker-compose"
    # tests/containers: a Docker engine of the tests' own (dockerd, with containerd and runc; its
    # client builds with BuildKit without buildx) and debootstrap for the local base images
    "docker.io dockerd"
    "debootstrap debootstrap"
    # test_matrix.py: psql through the proxies to a throwaway server (dpkg check: psql alone is not enough)
    "postgresql"
    # test_metrics_labels.py, test_deploy_prometheus.py: promtool checks /metrics and the shipped scrape configuration
    "prometheus promtool"
    # test_viz_dashboard.py: the dashboard in a real browser, headless, driven by selenium
    "chromium chromium"
    "chromium-driver chromedriver"
    # test_viz_top_terminal.py: viz top's full-screen table in a real terminal
    "tmux tmux"
    # test_real_clients.py: real clients and servers through the proxies (Go's h2c from Debian's x/net)
    "wget wget"
    "nodejs node"
    "npm npm"
    "golang-go go"
    "golang-golang-x-net-dev"
    "caddy caddy"
)
# test_real_clients.py: npm packages for Node's clients and apps, in .test-node/ (NODE_PATH points there)
TEST_NODE_PACKAGES=("ws@8")

ensure_debian_packages() {
    local want_test="$1" entry pkg cmd cmds ok missing=()
    local entries=("${BASE_PACKAGES[@]}")
    if [ "$want_test" -eq 1 ]; then entries+=("${TEST_PACKAGES[@]}"); fi
    for entry in "${entries[@]}"; do
        read -r pkg cmds <<<"$entry"
        ok=1
        if [ -n "${cmds:-}" ]; then
            for cmd in $cmds; do have_cmd "$cmd" || ok=0; done
        else
            have_pkg "$pkg" || ok=0
        fi
        if [ "$ok" -eq 0 ]; then missing+=("$pkg"); fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0

    if ! have_cmd apt-get; then
        note "warning: not a Debian system (no apt-get); install these yourself: ${missing[*]}"
        return 0
    fi
    note "installing Debian packages: ${missing[*]}"
    # Another apt or dpkg (unattended upgrades, a parallel bootstrap) may hold the locks: wait for them.
    run_logged "apt-get update" as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update
    # nginx-light is bookworm's small nginx; later releases only have nginx.
    local i
    for i in "${!missing[@]}"; do
        if [ "${missing[$i]}" = nginx-light ] && ! apt-cache show nginx-light >/dev/null 2>&1; then
            missing[$i]=nginx
        fi
    done
    run_logged "apt-get install" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
}

# python_ok PY: PY runs and is Python >= 3.11.
python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

pick_python() {
    local candidate seen=""
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if have_cmd "$candidate"; then
            seen="$seen $candidate=$("$candidate" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '?')"
            if python_ok "$candidate"; then
                command -v "$candidate"
                return 0
            fi
        fi
    done
    die "meshproxy needs Python >= 3.11; found:${seen:- no python3 at all}. Install python3.11 (Debian 12 has it as python3) or set PYTHON=/path/to/python3.11"
}

# The stamp records what the last successful install was made from; any
# difference (project metadata, checkout path) means install again.
stamp_value() {
    cat "$ROOT/pyproject.toml" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1
    echo "$ROOT"
}

ensure_venv() {
    if [ -x "$VENV_PY" ] && python_ok "$VENV_PY" \
        && { [ ! -f "$VENV/.bootstrap-root" ] || [ "$(cat "$VENV/.bootstrap-root")" = "$ROOT" ]; }; then
        return 0
    fi
    local py
    py="$(pick_python)"
    note "creating .venv with $py ($("$py" -c 'import platform; print(platform.python_version())'))"
    run_logged "creating .venv" "$py" -m venv --clear "$VENV"
    echo "$ROOT" >"$VENV/.bootstrap-root"
    rm -f "$VENV"/.bootstrap-stamp-*
}

ensure_python_packages() {
    local want_test="$1" stamp want spec stamps=()
    want="$(stamp_value)"
    if [ "$want_test" -eq 1 ]; then
        stamps=("$VENV/.bootstrap-stamp-test")
        spec=".[test,viz,injector]"
    else
        stamps=("$VENV/.bootstrap-stamp-test" "$VENV/.bootstrap-stamp-base")
        spec=".[viz,injector]"  # the dashboard's and the webhook's web server; the image goes without
    fi
    if [ -x "$VENV/bin/meshproxy" ]; then
        for stamp in "${stamps[@]}"; do
            if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
        done
    fi
    note "installing meshproxy and its Python dependencies into .venv"
    run_logged "upgrading pip" "$VENV_PY" -m pip install -q --upgrade pip
    # Build requirements go into .venv itself: the editable install then needs
    # no isolated build environment, and `setup.py build_ext` can run later.
    local build_requires
    build_requires="$("$VENV_PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"
    local reqs=()
    mapfile -t reqs <<<"$build_requires"
    run_logged "installing build requirements" "$VENV_PY" -m pip install -q "${reqs[@]}"
    run_logged "pip install -e '$spec'" "$VENV_PY" -m pip install -q --no-build-isolation -e "$spec"
    echo "$want" >"${stamps[0]}"
}

ensure_node_packages() {
    local spec missing=()
    for spec in "${TEST_NODE_PACKAGES[@]}"; do
        [ -d "$ROOT/.test-node/node_modules/${spec%@*}" ] || missing+=("$spec")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    note "installing npm packages into .test-node: ${missing[*]}"
    run_logged "npm install" npm install --prefix "$ROOT/.test-node" --no-audit --no-fund "${missing[@]}"
}

# Compiled modules are proxy/**/NAME.{pyx,py} with a NAME.pxd beside them
# (the rule setup.py builds by); each must have a .so newer than every
# source it is made from.
ensure_fastpath() {
    local suffix pxd stem so src stale=0 built=()
    suffix="$("$VENV_PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    local sources=() pxds=()
    mapfile -t pxds < <(find "$ROOT/proxy" -name '*.pxd' | sort)
    sources=("$ROOT/setup.py")
    for pxd in "${pxds[@]}"; do
        stem="${pxd%.pxd}"
        sources+=("$pxd")
        if [ -f "$stem.pyx" ]; then sources+=("$stem.pyx"); elif [ -f "$stem.py" ]; then sources+=("$stem.py"); else continue; fi
        built+=("$stem$suffix")
    done
    [ "${#built[@]}" -eq 0 ] && return 0
    for so in "${built[@]}"; do
        if [ ! -f "$so" ]; then stale=1; break; fi
        for src in "${sources[@]}"; do
            if [ "$src" -nt "$so" ]; then stale=1; break 2; fi
        done
    done
    [ "$stale" -eq 0 ] && return 0
    note "building the compiled modules (Cython)"
    run_logged "building the compiled modules" "$VENV_PY" setup.py -q build_ext --inplace
    # build_ext skips modules whose C output it thinks current; mark them all
    # as built now so the check above stays quiet until a source changes.
    for so in "${built[@]}"; do
        [ -f "$so" ] || die "build finished but $so is missing"
        touch "$so"
    done
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: run in a subshell so `set -e` and friends stay ours.
    (bootstrap_main "$@")
    return $?
fi
bootstrap_main "$@"
