"""`python -m bot` without a token explains how to get one and exits non-zero, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]


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
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing created before the token check


def test_the_token_is_never_shown_in_settings_output():
    from bot.config import Settings

    settings = Settings(_env_file=None, discord_token="super-secret-token")
    assert "super-secret-token" not in repr(settings) and "super-secret-token" not in str(settings.model_dump())


def test_invalid_settings_are_reported_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLECODES_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), DISCORD_TOKEN="x", STYLECODES_QUEUE_CAP="0")
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "Invalid settings" in result.stderr and "queue_cap" in result.stderr
    assert "Traceback" not in result.stderr
