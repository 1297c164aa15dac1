"""The container recipe (Dockerfile, deploy/compose.yaml, .env.example), checked without Docker:
the files parse, name only settings that exist, list every setting with its default, and the
image installs the package the way the tests' environment does."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from pushgate.config import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTING = re.compile(r"\bPUSHGATE_[A-Z0-9_]+\b")
ENV_LINE = re.compile(r"^#?\s*(PUSHGATE_[A-Z0-9_]+)=(.*)$")


def setting_names() -> set[str]:
    return {f"PUSHGATE_{name.upper()}" for name in Settings.model_fields}


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return {m[1]: m[2] for m in map(ENV_LINE.match, lines) if m}


def dockerfile_runs() -> list[str]:
    """The Dockerfile's RUN commands, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [" ".join(line.split()[1:]) for line in text.splitlines()
            if line.startswith("RUN ")]


def test_compose_parses_and_runs_postgres_migrate_api_worker() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "api", "worker"}
    assert services["migrate"]["command"] == ["pushgate", "migrate"]
    assert services["api"]["command"][:2] == ["pushgate", "serve"]
    assert services["worker"]["command"] == ["pushgate", "worker"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
        url = services[name]["environment"]["PUSHGATE_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_deploy_files_name_only_existing_settings() -> None:
    for path in (ROOT / "deploy" / "compose.yaml", ROOT / ".env.example",
                 ROOT / "Dockerfile"):
        unknown = set(SETTING.findall(path.read_text())) - setting_names()
        assert not unknown, f"{path.name} names settings that do not exist: {unknown}"


def test_env_example_lists_every_setting_with_its_default() -> None:
    listed = env_example()
    assert set(listed) == setting_names()
    for variable, value in listed.items():
        field = variable.removeprefix("PUSHGATE_").lower()
        # A keyword argument wins over the environment, so only the listed value is read.
        parsed = Settings(_env_file=None, **{field: value})
        assert getattr(parsed, field) == Settings.model_fields[field].default, variable


def test_image_installs_the_wheel_with_the_extra_the_tests_use() -> None:
    runs = dockerfile_runs()
    assert "python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in runs
    assert any(run.startswith('python -m pip install "$(ls /wheels/pushgate-*.whl)[postgres]"')
               for run in runs), runs
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    drivers = {re.split(r"[\[<>=;]", d)[0] for d in extras["postgres"]}
    assert drivers == {"asyncpg", "psycopg"}
    # The base install is SQLite only; `make install`/`make test` install the dev extra,
    # which includes the image's postgres extra, so the suite runs on the image's drivers.
    assert not {re.split(r"[\[<>=;]", d)[0] for d in project["dependencies"]} & drivers
    assert "pushgate[postgres]" in extras["dev"]
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q -e '.[dev]'" in makefile
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "/healthz" in text and "HEALTHCHECK" in text
    assert 'VOLUME ["/data"]' in text and "sqlite:////data/" in text


@pytest.mark.slow
def test_the_images_wheel_build_holds_the_package(tmp_path: Path) -> None:
    """The Dockerfile's `pip wheel` step, run here: a wheel with the migrations, the SPDX
    license, and the PostgreSQL drivers only under the extra."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir",
                            "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("pushgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
    assert "pushgate/store/migrations/env.py" in names
    assert any(n.startswith("pushgate/store/migrations/versions/") for n in names)
    assert "License-Expression: Apache-2.0" in meta
    assert "Provides-Extra: postgres" in meta
    for driver in ("asyncpg", "psycopg"):
        lines = [line for line in meta.splitlines()
                 if line.startswith(f"Requires-Dist: {driver}")]
        assert lines and all('extra == "postgres"' in line for line in lines), lines
