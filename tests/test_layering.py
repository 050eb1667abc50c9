"""The package's imports obey the layering in DESIGN.md: no import circles, nothing imported from a higher
layer, no private name imported across modules, and a first-line docstring in every module.

Imports inside functions count like those at the top: a lazy import still ties two modules together.
The layers, from the bottom (a module imports only from its own layer or below):

    1 errors, workspace, config/            schema, run directory, manifest
    2 data/, demos/                         load, formats, audit, ...; the demo data writers
    3 models/                               registry, loading, export; generation and scoring over batches
    4 train/                                shared training pieces, the forgetting guards
    5 recipes/                              one file per method
    6 evaluate/, report/                    scoring a run, the report
    7 stages, multistage, worker            a run: data -> train -> evaluate -> report
    8 serve/, feedback/, tune/              the server, the loop, searches
    9 ui/, cli, chat, every */commands.py   the faces: web UI, the Typer app and its sub-commands
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tuneloop"

LAYERS = {
    "tuneloop": 1, "tuneloop.errors": 1, "tuneloop.workspace": 1, "tuneloop.config": 1,
    "tuneloop.data": 2, "tuneloop.demos": 2,
    "tuneloop.models": 3,
    "tuneloop.train": 4,
    "tuneloop.recipes": 5,
    "tuneloop.evaluate": 6, "tuneloop.report": 6,
    "tuneloop.stages": 7, "tuneloop.multistage": 7, "tuneloop.worker": 7,
    "tuneloop.serve": 8, "tuneloop.feedback": 8, "tuneloop.tune": 8,
    "tuneloop.ui": 9, "tuneloop.cli": 9, "tuneloop.chat": 9,
}
FACES = 9  # a package's `commands` module is its part of the command line


def module_files() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.relative_to(PACKAGE).parts:  # Alembic's scripts, loaded by Alembic
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every tuneloop import in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("tuneloop")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("tuneloop"):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None, node.lineno) if submodule in modules
                             else (base, alias.name, node.lineno))
    return found


def owning_module(name: str, modules: dict[str, Path]) -> str:
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def layer_of(module: str) -> int:
    if module.rpartition(".")[2] == "commands":
        return FACES
    prefix = module
    while prefix not in LAYERS:
        prefix = prefix.rpartition(".")[0]
        assert prefix, f"{module} has no layer: add its package to LAYERS here and to DESIGN.md's layering"
    return LAYERS[prefix]


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in imported_names(name, path, modules):
            target = owning_module(target, modules)
            if target != name:
                graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_graph_has_no_circles():
    found = circles(import_graph())
    assert not found, "import circles (each module reaches the others and back):\n" + "\n".join(
        " <-> ".join(component) for component in found)


def test_every_import_goes_to_the_same_layer_or_below():
    modules = module_files()
    upward = []
    for name, path in sorted(modules.items()):
        for target, _, line in imported_names(name, path, modules):
            target = owning_module(target, modules)
            if layer_of(target) > layer_of(name):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer {layer_of(name)}) imports "
                              f"{target} (layer {layer_of(target)})")
    assert not upward, ("imports against the layering (move the shared piece down to a layer both may import):\n"
                        + "\n".join(upward))


def test_no_private_name_is_imported_across_modules():
    modules = module_files()
    private = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name} from {target}"
               for module, path in sorted(modules.items())
               for target, name, line in imported_names(module, path, modules)
               if name is not None and name.startswith("_") and name != "__version__"]
    assert not private, "private names imported from another module (give them a public name and home):\n" + \
        "\n".join(private)


def test_every_module_says_in_its_first_line_what_it_does():
    missing = [str(path.relative_to(PACKAGE.parent)) for path in module_files().values()
               if not (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()]
    assert not missing, "modules without a docstring: " + ", ".join(missing)


def test_the_checks_catch_a_circle_and_an_upward_import():
    """The checks themselves can fail: a made-up graph with a circle is found, a data module is below train."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    assert layer_of("tuneloop.data.prepare") < layer_of("tuneloop.train.fit") < layer_of("tuneloop.stages")
    assert layer_of("tuneloop.data.commands") == FACES
