"""The shape of the code: imports run one way.

The import graph is read from the source with `ast` (nothing is imported), over every module of the
project's packages. It counts imports inside functions too: a function-local import that closes a
circle only hides the circle until the function runs. Imports under `if TYPE_CHECKING:` never run and are
left out. Lazy imports of libraries (torch inside a function of the bot) are fine: they are no edge
between the project's modules.

- No import cycle among the project's modules.
- `stylecodes` (the ML library) imports none of the application's libraries or packages; `registry` imports
  neither torch nor discord nor the bot.
- The bot's folders are layers: each imports only its own layer and the ones below (`BOT_LAYERS`), and
  only the Discord front end (and the entry point above it) imports discord.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGES = ("bot", "registry", "stylecodes", "web")  # `web` once it exists

# What each library package must never import (top-level names of libraries, or project packages).
FORBIDDEN: dict[str, frozenset[str]] = {
    "stylecodes": frozenset(
        {"discord", "sqlalchemy", "aiosqlite", "asyncpg", "alembic", "redis", "registry", "bot", "web"}
    ),
    "registry": frozenset({"torch", "diffusers", "transformers", "discord", "redis", "bot", "web"}),
}

# The bot's layers, lowest first: a module imports modules of its own layer and of the layers below only.
# Patterns are module names (`fnmatch`); every module of `bot` belongs to exactly one layer.
BOT_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core: settings, jobs and their events, metrics", ("bot", "bot.config", "bot.jobs", "bot.metrics")),
    ("protocol: what the bot side and the worker side agree on", ("bot.protocol", "bot.protocol.*")),
    ("worker: runs the models", ("bot.worker", "bot.worker.*")),
    ("dispatch: the front end's side of the queue", ("bot.dispatch", "bot.dispatch.*")),
    ("front end: shared pieces", ("bot.frontend", "bot.frontend.errors", "bot.frontend.embeds",
                                  "bot.frontend.attachments", "bot.frontend.options")),
    ("front end: persistent buttons, menus and modals", ("bot.frontend.views",)),
    ("front end: actions", ("bot.frontend.actions", "bot.frontend.actions.*")),
    ("front end: cogs", ("bot.frontend.cogs", "bot.frontend.cogs.*")),
    ("front end: the Discord client", ("bot.frontend.app",)),
    ("entry point: python -m bot", ("bot.__main__",)),
)
DISCORD_LAYERS_FROM = 4  # index of the first layer that may import discord


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # a project module, or the top-level name of a library
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.source}:{self.line} imports {self.target}{where}"


@cache
def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of `PACKAGES` in the working tree."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        root = PROJECT_ROOT / package
        if not (root / "__init__.py").is_file():
            continue
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: dict[str, Path]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.depth = 0
        self.found: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # for type checkers only: never runs
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the package, one level up per extra dot
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else base, node)

    def _add(self, name: str, node: ast.stmt) -> None:
        top = name.partition(".")[0]
        if top in PACKAGES:  # the longest project module the name starts with
            while name not in self.known and "." in name:
                name = name.rpartition(".")[0]
        else:
            name = top
        found = Import(self.module, name, node.lineno, self.depth > 0)
        if found not in self.found:  # `from x import a, b`: one import of x
            self.found.append(found)


@cache
def imports() -> tuple[Import, ...]:
    known = project_modules()
    found: list[Import] = []
    for module, path in known.items():
        collector = _ImportCollector(module, path.name == "__init__.py", known)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += collector.found
    return tuple(found)


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """Tarjan's algorithm, iteratively: the groups of modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                yield sorted(group)


def import_cycles() -> list[list[Import]]:
    """Each cycle as the imports between the modules of one strongly connected group."""
    modules = project_modules()
    edges: dict[str, set[str]] = {}
    for found in imports():
        if found.target in modules:
            edges.setdefault(found.source, set()).add(found.target)
    cycles = []
    for group in strongly_connected(sorted(modules), edges):
        members = set(group)
        if len(group) > 1 or group[0] in edges.get(group[0], ()):
            cycles.append([i for i in imports() if i.source in members and i.target in members])
    return cycles


def bot_layer(module: str) -> int:
    matches = [
        number
        for number, (_name, patterns) in enumerate(BOT_LAYERS)
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns)
    ]
    assert len(matches) == 1, f"{module} must belong to exactly one of BOT_LAYERS (it is in {len(matches)})"
    return matches[0]


# --- the checks ---------------------------------------------------------------------------------------


def test_the_import_graph_is_read_from_the_real_tree() -> None:
    found = set(imports())
    assert any(i.source == "bot.dispatch.base" and i.target == "bot.jobs" for i in found)
    assert any(i.source == "bot.frontend.app" and i.target == "discord" for i in found)
    assert any(i.in_function for i in found)  # the function-local imports are seen too


def test_cycles_are_found_through_function_local_imports(tmp_path: Path) -> None:
    """The checker itself: a circle closed only inside a function is a circle."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def later():\n    from a import x\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        collector = _ImportCollector(module, False, known)
        collector.visit(ast.parse(path.read_text()))
        for found in collector.found:
            edges.setdefault(module, set()).add(found.target)
    assert [group for group in strongly_connected(sorted(known), edges) if len(group) > 1] == [["a", "b"]]


def test_no_import_cycles() -> None:
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(
        "  " + "\n  ".join(str(i) for i in cycle) + "\n" for cycle in cycles
    )


def test_libraries_never_import_the_application() -> None:
    wrong = [
        str(i)
        for i in imports()
        if i.target.partition(".")[0] in FORBIDDEN.get(i.source.partition(".")[0], frozenset())
    ]
    assert not wrong, "\n".join(wrong)


def test_bot_imports_run_down_its_layers() -> None:
    modules = project_modules()
    upward = []
    for i in imports():
        if not i.source.startswith("bot") or not (i.target == "bot" or i.target.startswith("bot.")):
            continue
        if i.target in modules and bot_layer(i.target) > bot_layer(i.source):
            upward.append(f"{i} (layer {BOT_LAYERS[bot_layer(i.target)][0]!r})")
    assert not upward, "imports up the bot's layers:\n" + "\n".join(upward)


def test_every_bot_module_has_a_layer() -> None:
    for module in project_modules():
        if module == "bot" or module.startswith("bot."):
            bot_layer(module)


def test_only_the_front_end_imports_discord() -> None:
    wrong = [
        str(i)
        for i in imports()
        if i.target == "discord" and i.source.startswith("bot") and bot_layer(i.source) < DISCORD_LAYERS_FROM
    ]
    assert not wrong, "\n".join(wrong)


def test_registry_imports_neither_torch_nor_discord() -> None:
    """At run time too, through every library it loads."""
    script = (
        "import sys, registry, registry.similar, registry.db\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'discord'})\n"
        "print(','.join(heavy))\n"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
