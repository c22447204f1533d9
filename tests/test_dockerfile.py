"""The two Dockerfiles, checked by parsing them (tests/containers builds and runs them).

Checked: the proxy image is multi-stage (a builder that compiles the Cython
wheel, a slim runtime that installs wheels only and keeps no build tools,
trimmed of the installers and flattened into the image's one layer),
runs as the numeric uid iptables-init exempts, exposes the three ports, has a
HEALTHCHECK on /ready and the ``meshproxy`` entrypoint; the init image's
entrypoint is the ``meshproxy-init`` script it copies in. Both build offline
too: the wheels or .deb files come from a stage picked by a build argument.
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


def runtime_of(stages: list[Stage]) -> Stage:
    [runtime] = [s for s in stages if s.name == "runtime"]
    return runtime


def test_multi_stage_builder_and_slim_runtime(proxy_stages: list[Stage]) -> None:
    assert len(proxy_stages) >= 3
    builder, runtime = proxy_stages[0], runtime_of(proxy_stages)
    assert builder.name == "builder"
    assert "slim" in runtime.base
    assert runtime.base.split(":")[0].startswith("python")


def test_the_image_is_the_trimmed_runtime_flattened(proxy_stages: list[Stage]) -> None:
    image, runtime = proxy_stages[-1], runtime_of(proxy_stages)
    assert image.base == "scratch" and [shlex.split(a) for a in image.all("COPY")] == [["--from=runtime", "/", "/"]]
    assert not image.all("RUN")  # nothing added on top of the one layer
    env = " ".join(image.all("ENV"))
    assert "PATH=" in env and "/usr/local/bin" in env and "LANG=C.UTF-8" in env
    trim = " ".join(r for r in runtime.all("RUN") if "rm -rf" in r)
    for gone in ("/pip", "setuptools", "pkg_resources", "/wheel", "lib2to3", "distutils"):
        assert gone in trim, gone
    assert "python -c 'import proxy.cli" in trim  # and the proxy still imports after the trim


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
    runtime = runtime_of(proxy_stages)
    for instruction in runtime.instructions + proxy_stages[-1].instructions:
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
    stage = stages[-1]  # the image; the stages before it only hold the offline build's .deb files
    assert stage.base == "debian:bookworm-slim"
    entrypoint = exec_form(stage.last("ENTRYPOINT"))
    assert len(entrypoint) == 1 and entrypoint[0].endswith("/meshproxy-init")
    copied = [shlex.split(args) for args in stage.all("COPY")]
    assert any(words[-1] == entrypoint[0] and words[0] == "meshproxy-init" for words in copied)
    assert (ROOT / "iptables-init" / "meshproxy-init").exists()
    runs = " ".join(stage.all("RUN"))
    assert "iptables" in runs and "python3-minimal" in runs
    assert not set(re.split(r"[\s;&|=]+", runs)) & set(BUILD_TOOLS)


# ---- the offline build (the containers tests build both images this way) -------


def test_no_syntax_line_so_no_frontend_image_is_pulled() -> None:
    for path in (ROOT / "Dockerfile", ROOT / "iptables-init" / "Dockerfile"):
        first = path.read_text().lstrip().splitlines()[0]
        assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), f"{path}: {first}"


def _selected(path: Path, arg: str) -> tuple[str, list[Stage]]:
    """The default of a global ARG that names the stage a later FROM takes, and the stages."""
    defaults = re.findall(rf"^ARG {arg}=(\S+)$", path.read_text(), re.MULTILINE)
    assert len(defaults) == 1, f"{path}: ARG {arg}"
    return defaults[0], parse(path)


def test_proxy_wheels_come_from_the_builder_or_the_wheelhouse(proxy_stages: list[Stage]) -> None:
    default, stages = _selected(ROOT / "Dockerfile", "WHEELS")
    assert default == "builder"  # online, as before
    names = {s.name for s in stages}
    assert {"builder", "wheelhouse", "wheels"} <= names
    [wheels] = [s for s in stages if s.name == "wheels"]
    assert wheels.base == "${WHEELS}"
    [wheelhouse] = [s for s in stages if s.name == "wheelhouse"]
    assert wheelhouse.base == "scratch"
    assert [shlex.split(a) for a in wheelhouse.all("COPY")] == [["wheelhouse/", "/wheels/"]]
    assert "!wheelhouse" in (ROOT / ".dockerignore").read_text().split()
    runtime = runtime_of(proxy_stages)
    install = [r for r in runtime.all("RUN") if "pip install" in r]
    assert install and "from=wheels," in install[0] and "--no-index" in install[0]
    # The builder makes what the wheelhouse holds: our wheel and every dependency's.
    assert (ROOT / "scripts" / "wheelhouse.sh").exists()


def test_init_packages_come_from_apt_or_local_debs() -> None:
    default, stages = _selected(ROOT / "iptables-init" / "Dockerfile", "DEBS")
    assert default == "apt"
    by_name = {s.name: s for s in stages}
    assert by_name["debs-apt"].instructions == []
    assert [shlex.split(a) for a in by_name["debs-local"].all("COPY")] == [["debs/", "/"]]
    assert by_name["debs"].base == "debs-${DEBS}"
    run = " ".join(stages[-1].all("RUN"))
    assert "from=debs," in run and "/debs/*.deb" in run and "apt-get update" in run
    assert "!debs" in (ROOT / "iptables-init" / ".dockerignore").read_text().split()
