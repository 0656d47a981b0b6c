"""The operator's opt-in: off until the licence is accepted; every missing piece named with its setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stylecodes.models.deadiff.settings import (
    ACCEPT_LICENSE_ENV,
    CHECKPOINT_ENV,
    DEADiffUnavailable,
    deadiff_settings,
)


def test_off_by_default_and_the_message_states_the_licence():
    settings = deadiff_settings({})
    assert not settings.enabled
    with pytest.raises(DEADiffUnavailable) as error:
        settings.require_checkpoint()
    message = str(error.value)
    assert f"{ACCEPT_LICENSE_ENV} is not set" in message
    assert "personal, research and non-commercial" in message and f"{ACCEPT_LICENSE_ENV}=1" in message


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_accepting_the_licence_turns_it_on(value, tmp_path):
    weights = tmp_path / "deadiff.safetensors"
    weights.write_bytes(b"x")
    settings = deadiff_settings({ACCEPT_LICENSE_ENV: value, CHECKPOINT_ENV: str(weights)})
    assert settings.enabled and settings.require_checkpoint() == weights


def test_an_ambiguous_licence_value_is_refused_not_guessed():
    with pytest.raises(DEADiffUnavailable, match=f"{ACCEPT_LICENSE_ENV}='maybe' is neither yes nor no"):
        deadiff_settings({ACCEPT_LICENSE_ENV: "maybe"})


def test_the_weights_setting_is_named_when_unset_or_wrong(tmp_path):
    with pytest.raises(DEADiffUnavailable, match=f"{CHECKPOINT_ENV} is not set.*stylecodes convert-deadiff"):
        deadiff_settings({ACCEPT_LICENSE_ENV: "1"}).require_checkpoint()
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(DEADiffUnavailable, match=f"{CHECKPOINT_ENV}={missing} is not a file"):
        deadiff_settings({ACCEPT_LICENSE_ENV: "1", CHECKPOINT_ENV: str(missing)}).require_checkpoint()


def test_reading_the_settings_does_not_import_torch():
    code = "import sys, stylecodes.models.deadiff.settings; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
