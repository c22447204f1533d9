"""``MESHPROXY_PURE=1`` in an install without Cython: the stand-in ``cython`` module (proxy/pureshim.py)
covers what the compiled modules' sources use, and the real proxy runs uncompiled and carries requests."""

from __future__ import annotations

import re
import sys
import urllib.request

import pytest

from helpers.meshproxy import MeshProxy
from helpers.upstream import HttpUpstream
from proxy import compiled, pureshim

pytestmark = pytest.mark.timeout(120)

# Run the proxy as `python -m proxy run`, with `import cython` failing as it does where Cython is not installed.
WITHOUT_CYTHON = [sys.executable, "-c",
                  "import runpy, sys; sys.modules['cython'] = None; sys.argv[1:] = ['run'];"
                  " runpy.run_module('proxy', run_name='__main__', alter_sys=True)"]


def test_the_stand_in_has_every_name_the_sources_use():
    shim = pureshim.build()
    used = set()
    for name in compiled.MODULES:
        source = compiled.source_of(name)
        if source.exists():
            used |= set(re.findall(r"\bcython\.([A-Za-z_]+)", source.read_text()))
    missing = {name for name in used if not hasattr(shim, name)}
    assert not missing, f"proxy/pureshim.py lacks {sorted(missing)}"


def test_casts_behave_as_c_would():
    shim = pureshim.build()
    assert shim.cast(shim.longlong, 2.9) == 2 and shim.cast(shim.int, -2.9) == -2
    assert shim.cast(shim.p_uchar, b"ab") == b"ab" and shim.cast(object, 3.5) == 3.5
    assert shim.declare(shim.int, 7) == 7 and shim.compiled is False
    assert shim.cimports.libc.math.exp(0.0) == 1.0


def test_the_proxy_runs_uncompiled_without_cython(tmp_path):
    up = HttpUpstream(name="pure-upstream")
    proxy = MeshProxy(env={"MESHPROXY_PURE": "1", "MESHPROXY_INBOUND_DEFAULT_TARGET": up.hostport},
                      name="proxy-pure", command=WITHOUT_CYTHON, log_path=tmp_path / "proxy.log")
    try:
        proxy.start()
        assert "compiled=False" in "\n".join(proxy.stderr_lines)
        # Both accept stages uncompiled: outbound, and inbound with its remembered authorization.
        for listener in (proxy.outbound_hostport, proxy.inbound_hostport):
            for i in range(3):
                request = urllib.request.Request(f"http://{listener}/pure/{i}", headers={"Host": up.hostport})
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
    finally:
        proxy.close()
        up.stop()
    assert "Traceback" not in "\n".join(proxy.stderr_lines)
