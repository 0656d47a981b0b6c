"""The registry's public API. (That importing it never pulls in torch or discord is checked with the
rest of the import rules in tests/test_architecture.py.)"""

from __future__ import annotations


def test_public_api_is_exported() -> None:
    import registry

    for name in registry.__all__:
        assert hasattr(registry, name), name
