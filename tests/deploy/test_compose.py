"""docker-compose.yml and the Dockerfile checked against the code (Docker cannot run here)."""

import importlib.util
import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose
from dotenv import dotenv_values

from bot.config import Settings, resolve_device, resolve_dtype
from stylecodes.versions import get_spec

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)  # PyYAML resolves the `<<:` merge keys the way compose does
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("migrate", "bot", "worker", "web")  # the ones running our image and reading our settings

# Variables read by third-party code rather than by our Settings, and who reads them.
THIRD_PARTY_ENV = {
    "HF_HOME": "huggingface_hub: where downloaded models are cached",
    "HF_HUB_OFFLINE": "huggingface_hub: never reach the Hub",
    "POSTGRES_USER": "the postgres image",
    "POSTGRES_DB": "the postgres image",
    "POSTGRES_PASSWORD": "the postgres image",
    "REDISCLI_AUTH": "redis-cli, in the redis health check",
    "MINIO_ROOT_USER": "the minio image",
    "MINIO_ROOT_PASSWORD": "the minio image (personal styles' object storage)",
    # Read by stylecodes/versions.py from os.environ (the entry points copy .env there first).
    **{
        get_spec(1).env_var(name): "stylecodes.versions: local model paths"
        for name in ("BASE_MODEL", "CHECKPOINT", "IMAGE_ENCODER")
    },
}
# Variables only compose itself reads, to fill in the file (`${NAME}`): they need not reach our settings.
COMPOSE_ONLY_ENV = {
    "POSTGRES_PASSWORD": "interpolated into the postgres service and STYLECODES_DATABASE_URL",
    "REDIS_PASSWORD": "interpolated into the redis service and STYLECODES_REDIS_URL",
}

_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME:+other}` and `$$`."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name") or match.group("bare"), match.group("op"), match.group("arg")
        value = env.get(name)
        missing = not value if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if missing else value
        if op in (":?", "?"):
            if missing:
                raise ValueError(f"compose refuses to start: {arg}")
            return value
        if op in (":+", "+"):
            return "" if missing else arg
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def example_keys() -> list[str]:
    """The keys of .env.example, including the optional ones it shows commented out (`# NAME=...`)."""
    text = ENV_EXAMPLE.read_text()
    return list(dotenv_values(ENV_EXAMPLE)) + re.findall(r"^# ([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


def sample_dotenv() -> dict[str, str]:
    """A filled-in .env: every key of .env.example with a value of its own."""
    # values the settings accept
    values = {"STYLECODES_MODEL_VERSION": "0", "HF_HUB_OFFLINE": "1", "STYLECODES_WEB_BASE_URL": "https://example.org"}
    return {key: values.get(key, f"{key.lower().replace('_', '')}42") for key in example_keys()}


def container_env(service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """What compose puts in the service's container: its env_file (.env), then its `environment`, which wins."""
    spec = SERVICES[service]
    env: dict[str, str] = {}
    for entry in spec.get("env_file", []):
        path = entry if isinstance(entry, str) else entry["path"]
        assert path == ".env", f"{service} reads an unexpected env file {path}"
        env.update(dotenv)
    for variable, value in spec.get("environment", {}).items():
        env[variable] = interpolate(str(value), dotenv)
    return env


def settings_in(service: str, monkeypatch, dotenv: dict[str, str] | None = None) -> Settings:
    for variable in list(os.environ):
        if variable.startswith("STYLECODES_") or variable == "DISCORD_TOKEN":
            monkeypatch.delenv(variable)
    for variable, value in container_env(service, sample_dotenv() if dotenv is None else dotenv).items():
        monkeypatch.setenv(variable, value)
    return Settings(_env_file=None)


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.update(choices if choices else [f"STYLECODES_{name.upper()}"])
    return names


def test_compose_file_is_valid_compose_syntax():
    parsed = PyCompose.from_json(json.dumps(COMPOSE))
    assert set(parsed.service_names()) == {"postgres", "redis", "migrate", "bot", "worker", "web", "minio"}


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
    dotenv = sample_dotenv()
    settings = settings_in("bot", monkeypatch, dotenv)
    assert settings.database_url.startswith("postgresql+asyncpg://stylecodes:")
    assert urllib.parse.urlsplit(settings.database_url).password == dotenv["POSTGRES_PASSWORD"]
    assert settings.redis_url == f"redis://:{dotenv['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == dotenv["DISCORD_TOKEN"]


def test_compose_refuses_to_start_without_the_passwords_it_needs():
    with pytest.raises(ValueError, match="set POSTGRES_PASSWORD"):
        container_env("bot", {**sample_dotenv(), "POSTGRES_PASSWORD": ""})
    with pytest.raises(ValueError, match="set DISCORD_TOKEN"):
        container_env("bot", {**sample_dotenv(), "DISCORD_TOKEN": ""})


def test_redis_password_is_optional_and_the_same_on_both_sides(monkeypatch):
    def requirepass(dotenv: dict[str, str]) -> str:
        command = [interpolate(part, dotenv) for part in SERVICES["redis"]["command"]]
        return command[command.index("--requirepass") + 1]

    dotenv = sample_dotenv()
    redis_url = settings_in("worker", monkeypatch, dotenv).redis_url
    assert requirepass(dotenv) == urllib.parse.urlsplit(redis_url).password == dotenv["REDIS_PASSWORD"]
    assert container_env("redis", dotenv)["REDISCLI_AUTH"] == dotenv["REDIS_PASSWORD"]  # the health check's login
    # Left empty: an empty requirepass (Redis asks for no password) and a URL without one.
    no_password = {**dotenv, "REDIS_PASSWORD": ""}
    assert requirepass(no_password) == ""
    assert not urllib.parse.urlsplit(settings_in("worker", monkeypatch, no_password).redis_url).password


def test_every_env_example_key_reaches_the_containers():
    dotenv = sample_dotenv()
    for key in example_keys():
        assert key in settings_env_names() | set(THIRD_PARTY_ENV) | set(COMPOSE_ONLY_ENV), f"nothing reads {key}"
    for service in APP_SERVICES:
        assert SERVICES[service]["env_file"] == [{"path": ".env", "required": False}], service
        env = container_env(service, dotenv)
        for key in example_keys():
            if key in COMPOSE_ONLY_ENV:
                assert any(dotenv[key] in value for value in env.values()), f"{key} is not used in {service}"
            else:
                assert env.get(key) == dotenv[key], f"{service}: {key} from .env is lost or overridden"


def test_compose_environment_sets_no_model_version():
    # The model version, like every other setting, comes from .env (default 1), not from the compose file.
    for service in APP_SERVICES:
        assert "STYLECODES_MODEL_VERSION" not in SERVICES[service].get("environment", {}), service


def test_worker_runs_on_cuda_in_half_precision(monkeypatch):
    settings = settings_in("worker", monkeypatch, {**sample_dotenv(), "STYLECODES_DEVICE": "cpu"})
    assert settings.device == "cuda"  # compose decides, whatever a laptop's .env says
    # Unindexed: each replica claims a GPU of its own (bot/worker/gpu_lease.py) among all it sees.
    assert resolve_device(settings.device, gpu_count=2) == "cuda"
    assert settings.dtype == "float16" and resolve_dtype(settings.dtype, "cuda:1") == "float16"


def test_volumes_and_persistence():
    declared = set(COMPOSE["volumes"])
    assert {"postgres-data", "redis-data", "hf-cache", "bot-data"} <= declared
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared, f"{name} mounts undeclared volume {source}"
    hf_mount = "hf-cache:" + SERVICES["bot"]["environment"]["HF_HOME"]
    assert hf_mount in SERVICES["bot"]["volumes"] and hf_mount in SERVICES["worker"]["volumes"]
    assert "--appendonly" in SERVICES["redis"]["command"]
    assert SERVICES["redis"]["command"][SERVICES["redis"]["command"].index("--appendonly") + 1] == "yes"


def test_bot_data_dir_is_a_volume(monkeypatch):
    # The "commands already published" marker lives in the data dir: without a volume every redeploy
    # would publish the commands again (Discord rate-limits that).
    data_dir = settings_in("bot", monkeypatch).data_dir
    assert data_dir.is_absolute()
    assert f"bot-data:{data_dir}" in SERVICES["bot"]["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The image creates it for the unprivileged user, so the new volume starts out writable by the bot.
    assert re.search(rf"mkdir -p [^\n]*{data_dir}\b", dockerfile)
    assert re.search(rf"chown [^\n]*{data_dir}\b", dockerfile)


@pytest.mark.parametrize("service", ["postgres", "redis", "minio", "bot", "worker"])
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


def test_worker_reserves_the_gpus_and_scales_by_replicas():
    deploy = SERVICES["worker"]["deploy"]
    assert deploy["replicas"] >= 2
    device = deploy["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # Every replica sees every GPU and claims one itself: a `count: 1` reservation would give all
    # replicas GPU 0 (Docker has no GPU pool), and pinned `device_ids` would not scale by replicas.
    assert device["count"] == "all" and "device_ids" not in device
    assert SERVICES["worker"]["environment"]["STYLECODES_DEVICE"] == "cuda"


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
