"""cluster/Dockerfile builds the image the KubeRay RayService names, the way the README
installs the package: read as text (no Docker needed), checked for the properties a review
would look for."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass

import pytest

from tests.support import REPO

DOCKERFILE = REPO / "cluster" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# A Debian slim Python 3.11 image, optionally a Debian release and a digest.
SLIM_311 = re.compile(
    r"python:3\.11(\.\d+)?-slim(-(bookworm|trixie|bullseye))?(@sha256:[0-9a-f]{64})?"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def pip_install_spec(command: str) -> list[str] | None:
    """What the first `pip install` in a shell command installs: its arguments, with the
    options that do not name a package (--no-deps, --index-url URL, ...) dropped."""
    for step in command.split("&&"):
        argv = shlex.split(step)
        if len(argv) < 2 or not argv[0].endswith("pip") or argv[1] != "install":
            continue
        spec, rest = [], argv[2:]
        for i, arg in enumerate(rest):
            takes_value = i > 0 and rest[i - 1] in ("--index-url", "--extra-index-url", "-r", "-c")
            if (arg == "-e" or not arg.startswith("-")) and not takes_value:
                spec.append(arg)
        return spec
    return None


def readme_pip_install_spec() -> list[str]:
    """What the README's first command (its first fenced block) installs: `-e .`."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh|shell)?\n(.*?)```", readme, re.S)
    assert block, "README.md has no fenced command block"
    spec = pip_install_spec(block.group(1))
    assert spec, f"no `pip install` in README's first command: {block.group(1)!r}"
    return spec


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def first(instructions: list[Instruction], keyword: str, contains: str = "") -> Instruction:
    for instruction in instructions:
        if instruction.keyword == keyword and contains in instruction.args:
            return instruction
    raise AssertionError(f"no {keyword} containing {contains!r}")


def test_base_is_a_slim_debian_python_311(instructions: list[Instruction]) -> None:
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 1
    image = froms[0].args.split()[0]
    assert SLIM_311.fullmatch(image), image


def test_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    cmd = first(instructions, "CMD")
    users = [i for i in instructions if i.keyword == "USER" and i.line < cmd.line]
    assert users, "no USER before CMD: the service would run as root"
    uid, _, gid = users[-1].args.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it; and the user the image creates.
    assert uid.isdigit() and int(uid) != 0, users[-1].args
    created = first(instructions, "RUN", "useradd")
    assert re.search(rf"useradd --uid {uid}\b", created.args), created.args
    assert not gid or re.search(rf"groupadd --gid {gid}\b", created.args), created.args
    # The source belongs to that user: models/ files are mode 0600.
    assert re.search(r"--chown=\S+ \. \.$", first(instructions, "COPY", "--chown").args)


def test_dependencies_are_a_layer_below_the_source(instructions: list[Instruction]) -> None:
    pyproject = first(instructions, "COPY", "pyproject.toml")
    deps = first(instructions, "RUN", "-r /tmp/requirements.txt")
    source = next(
        i for i in instructions if i.keyword == "COPY" and i.args.split()[-2:] == [".", "."]
    )
    package = first(instructions, "RUN", "--no-deps")
    assert pyproject.line < deps.line < source.line < package.line
    # The dependency layer sees nothing but pyproject.toml.
    between = [i for i in instructions if pyproject.line < i.line < deps.line]
    assert not [i for i in between if i.keyword in ("COPY", "ADD")]
    assert "tomllib" in deps.args and "'project']['dependencies']" in deps.args


def test_package_installed_with_the_readme_spec(instructions: list[Instruction]) -> None:
    package = first(instructions, "RUN", "--no-deps")
    assert pip_install_spec(package.args) == readme_pip_install_spec() == ["-e", "."]


def test_torch_is_the_cpu_wheel_at_the_pyproject_pin(instructions: list[Instruction]) -> None:
    deps = first(instructions, "RUN", "-r /tmp/requirements.txt")
    steps = deps.args.split("&&")
    (torch_step,) = [s for s in steps if "download.pytorch.org/whl/cpu" in s]
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_step
    # The pin is read from pyproject.toml at build time, never restated here...
    assert "grep '^torch==' /tmp/requirements.txt" in torch_step
    assert not [i for i in instructions if re.search(r"torch==\d", i.args)]
    # ...and pyproject.toml pins it exactly, so the CPU index serves that version.
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [p for p in pins if p.startswith("torch")] == ["torch==2.13.0"]
    assert steps.index(torch_step) < [i for i, s in enumerate(steps) if "-r " in s][0]


def test_ports_command_and_layout(instructions: list[Instruction]) -> None:
    exposed = {
        int(p.split("/")[0]) for i in instructions if i.keyword == "EXPOSE" for p in i.args.split()
    }
    assert {8000, 8080, 8265} <= exposed
    cmd = json.loads(first(instructions, "CMD").args)
    # The README's launcher, a console script of this package: the same serving path.
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert cmd[0] == "inference-serve" and cmd[0] in scripts
    # The config the image serves: host 0.0.0.0, rendered from serve_config.yaml.
    render = first(instructions, "RUN", "serve_config_v2")
    assert cmd[1] in render.args
    # The KubeRay manifest expects the models at /app/models in this image.
    sys.path.insert(0, str(REPO / "cluster"))
    try:
        import render_rayservice
    finally:
        sys.path.remove(str(REPO / "cluster"))
    assert first(instructions, "WORKDIR").args + "/models" == render_rayservice.MODEL_DIR
    assert json.loads(first(instructions, "ENTRYPOINT").args)[0] == "tini"


def test_dockerignore_keeps_the_local_state_out_and_the_package_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        for pattern in patterns:
            bare = pattern.removeprefix("**/")
            if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
                return True
            if pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in parts):
                return True
        return False

    for path in (".venv", ".git", "benchmarks/results/x.json", "deployments/__pycache__/a.pyc"):
        assert ignored(path), path
    for path in (
        "pyproject.toml",
        "README.md",
        "serve_config.yaml",
        "cluster/render_rayservice.py",
    ):
        assert not ignored(path), path
    for path in ("deployments/app.py", "models/fraud-risk/1/model.safetensors"):
        assert not ignored(path), path
