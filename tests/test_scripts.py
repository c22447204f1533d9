"""The set-up commands (scripts/) and CI's entry point (.ci/run).

CI must run exactly what the README tells a person to run, the scripts must be
executable and parse, and the bootstrap must install only what is missing:
nothing at all, silently, on a machine that already has everything."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [REPO / ".ci" / "run", *sorted((REPO / "scripts").glob("*.sh"))]


def _commands(path: Path) -> list[str]:
    """The script's lines that do something (no blanks, no comments)."""
    lines = path.read_text().splitlines()
    return [line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_the_readme_test_command_and_nothing_else():
    ci = REPO / ".ci" / "run"
    assert ci.read_text().splitlines()[0] == "#!/usr/bin/env bash"
    assert _commands(ci) == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "exec ./scripts/test.sh"]


def test_the_set_up_commands_exist():
    names = {path.name for path in SCRIPTS}
    assert {"run", "bootstrap.sh", "test.sh", "demo.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_is_executable_and_parses(script):
    mode = script.stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IXGRP and mode & stat.S_IXOTH, f"chmod +x {script}"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(script)], check=True)
    # Git records the bit too, where the file is tracked.
    listed = subprocess.run(["git", "ls-files", "-s", "--", str(script)], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        assert listed.stdout.split()[0] == "100755", listed.stdout


def test_test_and_demo_scripts_bootstrap_then_hand_over():
    test_sh = _commands(REPO / "scripts" / "test.sh")
    assert "./scripts/bootstrap.sh --test" in test_sh
    assert test_sh[-1] == 'exec .venv/bin/python -m pytest "$@"'
    demo_sh = _commands(REPO / "scripts" / "demo.sh")
    assert "./scripts/bootstrap.sh" in demo_sh
    assert demo_sh[-1] == 'exec .venv/bin/meshproxy demo "$@"'


def test_test_sh_keeps_pytests_status_when_no_test_ran():
    # pytest exits 5 when it ran no test; CI must see that as a failure.
    run = subprocess.run(
        ["./scripts/test.sh", "tests/test_scripts.py", "-k", "no_test_has_this_name", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 5, run.stdout + run.stderr


def test_test_sh_propagates_a_failing_status(tmp_path):
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_fails():\n    assert False\n")
    run = subprocess.run(["./scripts/test.sh", str(failing), "-p", "no:cacheprovider"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr


# ---- the bootstrap, with apt and friends replaced by recording stand-ins ----


def _shim(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture
def shims(tmp_path):
    """A bin directory first on PATH where apt-get, apt-cache and sudo only
    record how they were called (to calls.log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("apt-get", "apt-cache"):
        _shim(bin_dir, name, f'echo "{name} DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}} $*" >> {log}\n')
    _shim(bin_dir, "sudo", 'exec "$@"\n')
    return bin_dir, log


def _bootstrap(args: list[str], path: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_") and k != "PYTHON"}
    env["PATH"] = path
    return subprocess.run([str(cwd / "scripts" / "bootstrap.sh"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_bootstrap_on_a_ready_machine_does_nothing_quietly(shims):
    bin_dir, log = shims
    path = f"{bin_dir}:{os.environ['PATH']}"
    _bootstrap(["--test"], path)  # settle whatever this checkout still lacked
    started = time.monotonic()
    run = _bootstrap(["--test"], path)
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    assert (run.stdout, run.stderr) == ("", "")
    assert not log.exists(), log.read_text()
    assert took < 5.0


def test_bootstrap_installs_only_the_missing_packages(shims):
    bin_dir, log = shims
    # dpkg says python3-dev is not installed; everything else is.
    real_dpkg = shutil.which("dpkg")
    if real_dpkg is None:
        pytest.skip("not a Debian machine")
    _shim(bin_dir, "dpkg", f'[ "$1 $2" = "-s python3-dev" ] && exit 1\nexec {real_dpkg} "$@"\n')
    run = _bootstrap([], f"{bin_dir}:{os.environ['PATH']}")
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    # Another apt or dpkg holding the locks is waited for, not a failure.
    assert calls[0] == "apt-get DEBIAN_FRONTEND=noninteractive -o DPkg::Lock::Timeout=600 update"
    install = [c for c in calls if c.startswith("apt-get") and " install " in c]
    assert len(install) == 1 and install[0].endswith(" python3-dev"), calls
    assert "-y" in install[0].split()


def test_bootstrap_refuses_python_older_than_3_11(tmp_path, shims):
    bin_dir, _ = shims
    # A checkout with no .venv on a machine whose every python is 3.10.
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "bootstrap.sh", checkout / "scripts")
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(REPO / name, checkout)
    _shim(bin_dir, "dpkg", "exit 0\n")
    for name in ("python3", "python3.11", "python3.12", "python3.13"):
        _shim(bin_dir, name, 'case "$*" in *platform*) echo 3.10.14 ;; *) exit 1 ;; esac\n')
    run = _bootstrap([], f"{bin_dir}:/usr/bin:/bin", cwd=checkout)
    assert run.returncode == 1
    assert "needs Python >= 3.11" in run.stderr and "3.10.14" in run.stderr, run.stderr
    assert not (checkout / ".venv").exists()
