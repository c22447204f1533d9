"""The two Dockerfiles, checked by parsing them (no Docker engine is available to the tests).

Checked: the proxy image is multi-stage (a builder that compiles the Cython
wheel, a slim runtime that installs wheels only and keeps no build tools),
runs as the numeric uid iptables-init exempts, exposes the three ports, has a
HEALTHCHECK on /ready and the ``meshproxy`` entrypoint; the init image's
entrypoint is the ``meshproxy-init`` script it copies in.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TOOLS = ("build-essential", "gcc", "g++", "clang", "make", "cython", "python3-dev", "libc6-dev")


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse(path: Path) -> list[Stage]:
    """Dockerfile -> stages: comments dropped, backslash continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
            continue
        if keyword == "ARG" and not stages:
            continue
        assert stages, f"{path}: {keyword} before FROM"
        stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec (JSON) form: {args}"
    return value


@pytest.fixture(scope="module")
def proxy_stages() -> list[Stage]:
    return parse(ROOT / "Dockerfile")


def test_multi_stage_builder_and_slim_runtime(proxy_stages: list[Stage]) -> None:
    assert len(proxy_stages) >= 2
    builder, runtime = proxy_stages[0], proxy_stages[-1]
    assert builder.name == "builder"
    assert "slim" in runtime.base
    assert runtime.base.split(":")[0].startswith("python")


def test_builder_builds_wheels_with_cython(proxy_stages: list[Stage]) -> None:
    builder = proxy_stages[0]
    runs = " ".join(builder.all("RUN"))
    assert "build-essential" in runs  # the C compiler Cython's output needs
    assert re.search(r"pip wheel\b.*--wheel-dir\s+/wheels\s+\.", runs), runs
    # `pip wheel .` builds in an isolated environment from [build-system]
    # requires, which is where Cython comes from.
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert any(r.lower().startswith("cython") for r in requires)
    setup = (ROOT / "setup.py").read_text()
    assert "cythonize" in setup or "Cython" in setup
    # .dockerignore lets in what the build reads.
    ignore = (ROOT / ".dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!setup.py", "!proxy"):
        assert needed in ignore


def test_runtime_keeps_no_build_tools(proxy_stages: list[Stage]) -> None:
    runtime = proxy_stages[-1]
    for instruction in runtime.instructions:
        text = instruction.args.lower()
        if instruction.keyword == "RUN":
            words = set(re.split(r"[\s;&|=]+", text))
            assert not words & set(BUILD_TOOLS), f"build tool in runtime stage: {instruction.args}"
            if "pip install" in text:
                assert "--no-index" in text and "/wheels" in text, "runtime installs anything but the built wheels"
        if instruction.keyword in ("COPY", "ADD"):
            # Nothing from the builder but wheels (sources and compilers stay behind).
            assert "--from=builder" not in text or "/wheels" in text, instruction.args
            assert not re.search(r"\s\.\s", f" {text} "), f"runtime copies the build context: {instruction.args}"


def test_runtime_user_ports_entrypoint_healthcheck(proxy_stages: list[Stage]) -> None:
    runtime = proxy_stages[-1]
    assert runtime.last("USER") == "2102"  # numeric: runAsNonRoot can verify it, iptables-init skips it
    exposed = {p.split("/")[0] for args in runtime.all("EXPOSE") for p in args.split()}
    assert exposed == {"4140", "4143", "4191"}
    assert exec_form(runtime.last("ENTRYPOINT")) == ["meshproxy"]
    health = runtime.last("HEALTHCHECK")
    assert health.split()[0] != "NONE"
    command = health[health.index("CMD") :]
    assert "/ready" in command and "4191" in command


def test_ports_match_the_proxy_defaults() -> None:
    from proxy import config

    cfg = config.load(env={})
    assert {cfg.outbound_listen.port, cfg.inbound_listen.port, cfg.admin_listen.port} == {4140, 4143, 4191}


def test_iptables_init_image() -> None:
    stages = parse(ROOT / "iptables-init" / "Dockerfile")
    assert len(stages) == 1
    [stage] = stages
    entrypoint = exec_form(stage.last("ENTRYPOINT"))
    assert len(entrypoint) == 1 and entrypoint[0].endswith("/meshproxy-init")
    copied = [shlex.split(args) for args in stage.all("COPY")]
    assert any(words[-1] == entrypoint[0] and words[0] == "meshproxy-init" for words in copied)
    assert (ROOT / "iptables-init" / "meshproxy-init").exists()
    runs = " ".join(stage.all("RUN"))
    assert "iptables" in runs and "python3-minimal" in runs
    assert not set(re.split(r"[\s;&|=]+", runs)) & set(BUILD_TOOLS)
