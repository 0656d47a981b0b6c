"""`python -m bot` without a token explains how to get one and exits non-zero, without a traceback; the
same for invalid settings and for a registry or Redis it cannot reach. Also: `.env` reaches `os.environ`,
and the bot's /healthz is 503 until the gateway is ready and after the bot closed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import Settings, load_env_file
from bot.metrics import metrics_app

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def run_bot(cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    """`python -m bot` in `cwd` with only `variables` among the bot's settings."""
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("STYLECODES_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), HF_HUB_OFFLINE="1", **variables)
    return subprocess.run(
        [sys.executable, "-m", "bot"], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_missing_token_prints_setup_help_and_exits_non_zero(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("STYLECODES_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    # Run from an empty folder, so no .env is read.
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert "https://discord.com/developers/applications" in result.stderr
    assert "applications.commands" in result.stderr and "permissions=274878024704" in result.stderr
    assert "Privileged gateway intents: none are needed" in result.stderr
    # Where the application id for the invite URL is: the portal's General Information page.
    assert '"Application ID" on the application\'s "General Information" page' in result.stderr
    assert "client_id=APPLICATION_ID" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing created before the token check


def test_the_token_is_never_shown_in_settings_output():
    settings = Settings(_env_file=None, DISCORD_TOKEN="super-secret-token")  # the only name the token has
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "super-secret-token"
    for shown in (repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert "super-secret-token" not in shown
    assert "**********" in repr(settings)


def test_invalid_settings_are_reported_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECODES_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), DISCORD_TOKEN="x", STYLECODES_QUEUE_CAP="0")
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "Invalid settings" in result.stderr and "queue_cap" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_database_url_is_reported_as_a_setting(tmp_path):
    result = run_bot(tmp_path, DISCORD_TOKEN="x", STYLECODES_DATABASE_URL="mysql://root:hunter2@db/stylecodes")
    assert result.returncode == 2, result.stderr
    assert "Invalid settings" in result.stderr and "postgresql+asyncpg://" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_unreachable_database_is_a_message_not_a_traceback(tmp_path):
    url = "postgresql+asyncpg://stylecodes:hunter2@127.0.0.1:1/stylecodes"  # nothing listens on port 1
    result = run_bot(tmp_path, DISCORD_TOKEN="x", STYLECODES_DATABASE_URL=url)
    assert result.returncode == 2, result.stderr
    assert "Could not open the registry database at postgresql+asyncpg://stylecodes:***@127.0.0.1:1/stylecodes" in (
        result.stderr
    )
    assert "STYLECODES_DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_unreachable_redis_is_a_message_not_a_traceback(tmp_path):
    result = run_bot(tmp_path, DISCORD_TOKEN="x", STYLECODES_REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
    assert result.returncode == 2, result.stderr
    assert "Could not connect to Redis at redis://:***@127.0.0.1:1/0" in result.stderr
    assert "unset STYLECODES_REDIS_URL" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_unreachable_discord_is_a_message_not_a_traceback(tmp_path):
    api = "http://127.0.0.1:1/api/v10"
    result = run_bot(tmp_path, DISCORD_TOKEN="x", STYLECODES_MODEL_VERSION="0", STYLECODES_DISCORD_API_BASE=api)
    assert result.returncode == 2, result.stderr
    assert f"Could not reach Discord's API at {api}" in result.stderr and "STYLECODES_DISCORD_API_BASE" in result.stderr
    assert "Traceback" not in result.stderr
    assert "event=model_ready" not in result.stderr  # no model is loaded for a bot that cannot log in


def test_env_file_reaches_os_environ_without_overriding_the_environment(tmp_path, monkeypatch):
    """STYLECODES_V1_* and HF_HUB_OFFLINE are read from os.environ, not by Settings: .env must reach it."""
    from stylecodes.versions import get_spec

    (tmp_path / ".env").write_text(
        "STYLECODES_V1_BASE_MODEL=/models/sd15\nSTYLECODES_V1_CHECKPOINT=/models/from-dotenv.bin\n"
        "HF_HUB_OFFLINE=1\n# a comment\nSTYLECODES_QUEUE_CAP=7\n"
    )
    for name in ("STYLECODES_V1_BASE_MODEL", "HF_HUB_OFFLINE", "STYLECODES_QUEUE_CAP", "STYLECODES_V1_IMAGE_ENCODER"):
        monkeypatch.setenv(name, "placeholder")  # so that monkeypatch removes what load_env_file sets
        monkeypatch.delenv(name)
    monkeypatch.setenv("STYLECODES_V1_CHECKPOINT", "/models/from-environment.bin")
    monkeypatch.chdir(tmp_path)
    load_env_file()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["STYLECODES_QUEUE_CAP"] == "7"
    paths = get_spec(1).local_paths()
    assert paths.base_model == "/models/sd15"
    assert paths.checkpoint == "/models/from-environment.bin"  # the environment wins over .env
    assert paths.image_encoder is None


def test_entry_point_loads_env_before_huggingface_hub_reads_it(tmp_path):
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: `.env` must be in the environment before that."""
    (tmp_path / ".env").write_text("HF_HUB_OFFLINE=1\nSTYLECODES_V1_IMAGE_ENCODER=/models/siglip\n")
    script = (
        "import sys, bot.__main__ as m; "
        "assert 'huggingface_hub' not in sys.modules, 'imported before .env was read'; "
        "m.main([]); import huggingface_hub.constants as c, os; "
        "print(c.HF_HUB_OFFLINE, os.environ['STYLECODES_V1_IMAGE_ENCODER'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "HF_HUB_OFFLINE")}
    env = {k: v for k, v in env.items() if not k.startswith("STYLECODES_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "/models/siglip"]
    assert "DISCORD_TOKEN is not set" in result.stderr  # main ran: no token in that .env


async def health_of(bot) -> tuple[int, dict]:
    async with TestClient(TestServer(metrics_app(bot.health))) as client:
        response = await client.get("/healthz")
        return response.status, json.loads(await response.text())


@pytest.mark.usefixtures("standin")
async def test_bot_healthz_is_503_until_ready_and_after_close(harness):
    # The harness logs in over REST but never opens the gateway: no READY yet.
    status, body = await health_of(harness.bot)
    assert status == 503
    assert body["ok"] is False and body["ready"] is False and body["closed"] is False
    assert body["user"] is not None and body["models_loaded"] == []
    await harness.bot.close()
    status, body = await health_of(harness.bot)
    assert status == 503 and body["closed"] is True
