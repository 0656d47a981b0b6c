"""docker-compose.yml and the Dockerfile checked against the code (Docker cannot run here)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)  # PyYAML resolves the `<<:` merge keys the way compose does
SERVICES = COMPOSE["services"]

# Variables read by third-party code rather than by our Settings, and who reads them.
THIRD_PARTY_ENV = {
    "HF_HOME": "huggingface_hub: where downloaded models are cached",
    "POSTGRES_USER": "the postgres image",
    "POSTGRES_DB": "the postgres image",
    "POSTGRES_PASSWORD": "the postgres image",
}


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.update(choices if choices else [f"STYLECODES_{name.upper()}"])
    return names


def test_compose_file_is_valid_compose_syntax():
    parsed = PyCompose.from_json(json.dumps(COMPOSE))
    assert set(parsed.service_names()) == {"postgres", "redis", "migrate", "bot", "worker"}


def test_compose_validator_rejects_a_misspelt_key():
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["bot"]["helthcheck"] = broken["services"]["bot"].pop("healthcheck")
    with pytest.raises(ValueError, match="helthcheck"):
        PyCompose.from_json(json.dumps(broken))


@pytest.mark.parametrize("service", ["migrate", "bot", "worker"])
def test_every_service_command_exists(service):
    command = SERVICES[service]["command"]
    if command[:2] == ["python", "-m"]:
        module = command[2]
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"
    elif command[0] == "alembic":
        assert (ROOT / "alembic.ini").is_file()
        assert (ROOT / "alembic" / "env.py").is_file()
        assert command[1:] == ["upgrade", "head"]
    else:
        pytest.fail(f"unexpected command for {service}: {command}")


def test_every_environment_variable_is_read_by_someone():
    known = settings_env_names() | set(THIRD_PARTY_ENV)
    for name, service in SERVICES.items():
        for variable in service.get("environment", {}):
            assert variable in known, f"service {name} sets {variable}, which nothing reads"


def test_settings_accept_the_compose_environment(monkeypatch):
    for variable, value in SERVICES["bot"]["environment"].items():
        monkeypatch.setenv(variable, re.sub(r"\$\{[^}]*\}", "secret", str(value)))
    settings = Settings(_env_file=None)
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.discord_token is not None


def test_volumes_and_persistence():
    declared = set(COMPOSE["volumes"])
    assert {"postgres-data", "redis-data", "hf-cache"} <= declared
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared, f"{name} mounts undeclared volume {source}"
    hf_mount = "hf-cache:" + SERVICES["bot"]["environment"]["HF_HOME"]
    assert hf_mount in SERVICES["bot"]["volumes"] and hf_mount in SERVICES["worker"]["volumes"]
    assert "--appendonly" in SERVICES["redis"]["command"]
    assert SERVICES["redis"]["command"][SERVICES["redis"]["command"].index("--appendonly") + 1] == "yes"


@pytest.mark.parametrize("service", ["postgres", "redis", "bot", "worker"])
def test_health_checks_present(service):
    assert SERVICES[service]["healthcheck"]["test"]


def test_health_checks_use_the_metrics_port():
    port = SERVICES["bot"]["environment"]["STYLECODES_METRICS_PORT"]
    for service in ("bot", "worker"):
        assert f":{port}/healthz" in " ".join(SERVICES[service]["healthcheck"]["test"])


def test_migrations_run_before_the_bot_and_workers():
    for service in ("bot", "worker"):
        assert SERVICES[service]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_reserves_a_gpu_and_scales_by_replicas():
    deploy = SERVICES["worker"]["deploy"]
    assert deploy["replicas"] >= 1
    device = deploy["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_one_image_serves_bot_and_worker_from_an_official_pytorch_base():
    images = {SERVICES[name]["image"] for name in ("migrate", "bot", "worker")}
    assert images == {"stylecodes:latest"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"ARG PYTORCH_IMAGE=pytorch/pytorch:[\w.-]*cuda[\w.-]*-runtime", dockerfile)
    assert dockerfile.count("FROM ") == 1
    # Slim layering: dependencies are installed before the source is copied, so source edits reuse that layer.
    assert dockerfile.index("pip install .") < dockerfile.index("COPY stylecodes")
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    # The pinned torch in the base image must be the one pyproject pins, or pip would replace it.
    pinned = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"pytorch/pytorch:{pinned}-" in dockerfile
