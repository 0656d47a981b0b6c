"""The registry stays light: importing it never pulls in torch or discord."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_registry_imports_neither_torch_nor_discord() -> None:
    script = (
        "import sys, registry, registry.similar, registry.db\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'discord'})\n"
        "print(','.join(heavy))\n"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_public_api_is_exported() -> None:
    import registry

    for name in registry.__all__:
        assert hasattr(registry, name), name
