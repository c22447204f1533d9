"""The control plane's image (meshproxy-controller): the proxy image plus the injector's libraries, so
``meshproxy install``'s injector Deployment can run ``injector serve``; the sidecar image stays without them."""

from __future__ import annotations

from tests.containers.engine import Engine

EX_UNAVAILABLE = 69


def test_the_controller_runs_the_webhook_and_the_issuer(engine: Engine, images: dict[str, str]) -> None:
    for args in (["injector", "serve", "--help"], ["identity", "serve", "--help"]):
        result = engine.docker("run", "--rm", "--network", "none", images["controller"], *args, check=False)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stdout + result.stderr
    # Imports what serving needs (aiohttp and the webhook module), not only the parser.
    result = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "python", images["controller"],
                           "-c", "import aiohttp.web, proxy.inject.injector", check=False)
    assert result.returncode == 0, result.stderr


def test_the_sidecar_image_leaves_the_webhook_out_and_says_so(engine: Engine, images: dict[str, str]) -> None:
    result = engine.docker("run", "--rm", "--network", "none", images["proxy"], "injector", "serve", check=False)
    assert result.returncode == EX_UNAVAILABLE, result.stdout + result.stderr
    assert "meshproxy[injector]" in result.stderr
