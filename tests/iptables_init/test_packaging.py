"""iptables-init/ as an init-container payload: imports python3-minimal has, a runnable script, the image.

Debian's python3-minimal (what the image installs) ships a subset of the
standard library: no dataclasses, shutil, shlex or gettext. The module list
below is the one its README.Debian gives for bookworm (Python 3.11).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from .support import INIT_DIR, PYTHON, TOOL

PYTHON3_MINIMAL = set("""
__future__ _collections_abc _compat_pickle _py_abc _sitebuiltins _strptime _threading_local _weakrefset abc
argparse array ast atexit base64 binascii bisect builtins calendar cmath codecs collections compileall
configparser contextlib copy copyreg csv datetime dis email encodings enum errno fcntl filecmp fnmatch
functools gc genericpath getopt glob grp hashlib heapq importlib inspect io ipaddress itertools keyword
linecache locale logging marshal math opcode operator optparse os pathlib pickle pkgutil platform posix
posixpath pwd py_compile pyexpat quopri random re reprlib runpy select selectors signal socket spwd
sre_compile sre_constants sre_parse ssl stat string stringprep struct subprocess sys sysconfig syslog
tempfile textwrap threading time token tokenize traceback tracemalloc types typing unicodedata urllib uu
warnings weakref zipfile zipimport zlib
""".split())


def sources():
    yield TOOL
    yield from sorted((INIT_DIR / "meshproxy_init").glob("*.py"))


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_every_import_is_in_python3_minimal():
    for path in sources():
        outside = {m for m in imported_modules(path) if m != "meshproxy_init" and m not in PYTHON3_MINIMAL}
        assert not outside, f"{path.name} imports {outside}, which Debian's python3-minimal does not ship"


def test_the_script_runs_isolated_from_site_packages():
    assert TOOL.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.access(TOOL, os.X_OK)
    proc = subprocess.run([PYTHON, "-I", "-S", str(TOOL), "--version"], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0 and proc.stdout.startswith("meshproxy-init "), proc.stderr


def test_the_package_imports_nothing_outside_the_minimal_set_at_run_time():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules); "
            "import meshproxy_init.cli; "
            "print('\\n'.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    proc = subprocess.run([PYTHON, "-I", "-S", "-c", code, str(INIT_DIR)], capture_output=True, text=True,
                          timeout=20, check=True)
    # Private modules (_typing, _weakrefset) come with the public ones that need them, and
    # argparse asks for gettext where it can (Debian's minimal argparse guards that import).
    loaded = {m for m in proc.stdout.split() if not m.startswith("_")} - {"meshproxy_init", "gettext"}
    assert loaded - PYTHON3_MINIMAL - set(sys.builtin_module_names) == set()
    assert "dataclasses" not in loaded and "shutil" not in loaded


def test_the_image_installs_iptables_and_runs_the_script():
    dockerfile = (INIT_DIR / "Dockerfile").read_text()
    assert "FROM debian:bookworm-slim" in dockerfile
    assert "iptables" in dockerfile and "python3-minimal" in dockerfile
    assert 'ENTRYPOINT ["/opt/meshproxy-init/meshproxy-init"]' in dockerfile
    ignored = (INIT_DIR / ".dockerignore").read_text()
    assert "meshproxy_init" in ignored and "meshproxy-init" in ignored
