"""The reference data lives in the repository, unchanged, and nothing points outside the repository for it."""

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, REFERENCE_DIR, REFERENCE_MANIFEST, reference_data_changes

# A sibling folder of the checkout (how the reference data used to be found), or this machine's copy of it.
OUTSIDE_THE_REPOSITORY = re.compile(r"\.\./shared\b|/work[/]shared\b|\bshared[/]reference\b")


def test_reference_data_matches_its_manifest():
    assert reference_data_changes() == []


def test_every_listed_file_is_there_and_small():
    listed = [line.split(maxsplit=1)[1] for line in (REFERENCE_DIR / REFERENCE_MANIFEST).read_text().splitlines()]
    assert len(listed) == 7
    total = sum((REFERENCE_DIR / name).stat().st_size for name in listed)
    assert total < 20_000_000, f"the reference data grew to {total / 1e6:.1f} MB; keep it small"


def write_reference_folder(folder: Path) -> None:
    """A small stand-in for the reference folder, with its own manifest."""
    (folder / "golden_tiny").mkdir(parents=True)
    (folder / "codec_vectors.json").write_text('{"vectors": []}')
    (folder / "golden_tiny" / "io.safetensors").write_bytes(bytes(range(256)))
    (folder / "README.md").write_text("prose, not listed")
    sums = [
        f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}"
        for name in ("codec_vectors.json", "golden_tiny/io.safetensors")
    ]
    (folder / REFERENCE_MANIFEST).write_text("\n".join(sums) + "\n")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda folder: (folder / "codec_vectors.json").write_text("{}"), "changed: codec_vectors.json"),
        (lambda folder: (folder / "golden_tiny" / "io.safetensors").unlink(), "missing: golden_tiny/io.safetensors"),
        (
            lambda folder: (folder / "golden_tiny" / "new.json").write_text("{}"),
            "not in SHA256SUMS: golden_tiny/new.json",
        ),
        (lambda folder: (folder / "README.md").write_text("edited prose"), None),
    ],
)
def test_any_change_to_the_data_is_reported(tmp_path, change, expected):
    write_reference_folder(tmp_path)
    assert reference_data_changes(tmp_path) == []
    change(tmp_path)
    assert reference_data_changes(tmp_path) == ([expected] if expected else [])


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0:  # not a git checkout (an unpacked sdist): every file there counts
        return [str(p.relative_to(PROJECT_ROOT)) for p in PROJECT_ROOT.rglob("*") if p.is_file()]
    return result.stdout.splitlines()


def test_nothing_refers_to_data_outside_the_repository():
    offenders = []
    for name in tracked_files():
        path = PROJECT_ROOT / name
        if not path.is_file() or path.stat().st_size > 1_000_000:
            continue  # the weights
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{name}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), 1)
            if OUTSIDE_THE_REPOSITORY.search(line)
        ]
    assert offenders == [], "the repository must stand alone; these lines point outside it:\n" + "\n".join(offenders)
