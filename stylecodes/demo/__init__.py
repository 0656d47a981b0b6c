"""Version 0, the offline demo model (see `components`)."""

from stylecodes.demo.components import (
    DemoComponents,
    build_demo_architecture,
    build_demo_components,
    build_demo_tokenizer,
)

__all__ = ["DemoComponents", "build_demo_architecture", "build_demo_components", "build_demo_tokenizer"]
