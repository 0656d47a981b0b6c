"""Fixtures for every test: the reference data.

The reference data (tests/data/reference) is checked against its SHA256SUMS when the session ends, so
a test that changes it makes the run fail.
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = PROJECT_ROOT / "tests" / "data" / "reference"
REFERENCE_MANIFEST = "SHA256SUMS"  # `sha256sum` output; README.md is prose and not listed


def reference_data_changes(folder: Path = REFERENCE_DIR) -> list[str]:
    """How the files in `folder` differ from its SHA256SUMS: changed, missing or unlisted files."""
    listed = {}
    for line in (folder / REFERENCE_MANIFEST).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    present = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name not in (REFERENCE_MANIFEST, "README.md")
    }
    changes = [f"missing: {name}" for name in sorted(listed.keys() - present)]
    changes += [f"not in {REFERENCE_MANIFEST}: {name}" for name in sorted(present - listed.keys())]
    for name in sorted(present & listed.keys()):
        if hashlib.sha256((folder / name).read_bytes()).hexdigest() != listed[name]:
            changes.append(f"changed: {name}")
    return changes


@pytest.fixture(scope="session")
def reference_dir() -> Iterator[Path]:
    """Facts about the published StyleCodes release (tests/data/reference/README.md); read-only."""
    yield REFERENCE_DIR
    if changes := reference_data_changes():
        pytest.fail(f"the tests changed the reference data in {REFERENCE_DIR}: {'; '.join(changes)}")
