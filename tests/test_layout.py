"""The package keeps its layout (README "Layout"): no import cycle, asset modules independent of each
other, all SQL in storage/, no private names borrowed across modules, short functions, pages as files."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sp_assets"
ROOMS = ["defs", "core", "execution", "storage", "release", "review", "backends/judges", "backends/writers",
         "backends/editors", "backends/embedders", "backends/guards", "backends/sources", "backends/common"]
SQL = re.compile(r"\b(SELECT\b.+\bFROM|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|"
                 r"CREATE\s+(OR\s+REPLACE\s+)?(TABLE|VIEW)|ALTER\s+TABLE)\b", re.I | re.S)
MARKUP = re.compile(r"<(html|body|div|article|figure|table|style|script)\b", re.I)
MAX_FUNCTION_LINES = 60
MAX_ASSET_LINES = 40


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, set[str]] = field(default_factory=dict)  # module -> names taken from it


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _load() -> dict[str, Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        mod = Module(name, path, ast.parse(path.read_text(encoding="utf-8")))
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(node, name, path.name == "__init__.py")
                if source.startswith("sp_assets"):
                    mod.imports.setdefault(source, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("sp_assets"):
                        mod.imports.setdefault(a.name, set())
        modules[name] = mod
    return modules


MODULES = _load()


def _graph() -> dict[str, set[str]]:
    """module -> package modules it imports (a name imported from a package counts when it is a submodule)."""
    graph = {}
    for name, mod in MODULES.items():
        deps = set()
        for source, names in mod.imports.items():
            if source in MODULES:
                deps.add(source)
            deps.update(f"{source}.{n}" for n in names if f"{source}.{n}" in MODULES)
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep] if dep in path else [node, dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def _asset_modules() -> set[str]:
    """Modules under defs/ that define an asset (a function decorated with @asset)."""
    out = set()
    for name, mod in MODULES.items():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.FunctionDef) and any(
                    ast.unparse(d).split("(")[0].split(".")[-1] in ("asset", "multi_asset") for d in node.decorator_list):
                out.add(name)
    return out


def _functions():
    for mod in MODULES.values():
        for node in ast.walk(mod.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield mod, node, node.end_lineno - node.lineno + 1


def _string_constants(mod: Module):
    docstrings = {id(n.body[0].value) for n in ast.walk(mod.tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


@pytest.mark.parametrize("room", ROOMS)
def test_every_room_of_the_layout_exists(room):
    assert (PACKAGE / room / "__init__.py").is_file(), f"sp_assets/{room}/ is part of the layout (README 'Layout')"


def test_the_checks_see_the_whole_package():
    assert len(MODULES) > 50 and "sp_assets.defs.verified_pairs" in MODULES
    assert len(_asset_modules()) == 7, sorted(_asset_modules())


def test_no_import_cycle():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()) or [])}"


# Layers, lowest first (README "Layout"): a module imports its own layer and those below, never one above.
LAYERS = {"core": 0, "storage": 1, "backends": 2, "execution": 3, "release": 3, "review": 3, "defs": 4}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 5) if len(parts) > 2 or parts[-1] in LAYERS else 5


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if _layer(m) < _layer(d) and _layer(m) < 5)


def test_layers_import_downward_only():
    assert _upward(_graph()) == [], "imports that run up a layer (core < storage < backends < execution, " \
                                    "release, review < defs): move the shared piece down"


def test_the_layer_check_finds_an_upward_import():
    graph = {"sp_assets.core.a": {"sp_assets.backends.base"}, "sp_assets.defs.x": {"sp_assets.core.a"},
             "sp_assets.demo": {"sp_assets.defs.x"}}
    assert _upward(graph) == ["sp_assets.core.a -> sp_assets.backends.base"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_asset_modules_do_not_import_each_other():
    assets = _asset_modules()
    graph = _graph()
    bad = {a: sorted(graph[a] & assets) for a in assets if graph[a] & assets}
    assert not bad, f"asset modules importing other asset modules: {bad}"


def test_assets_are_defined_in_defs():
    for name in _asset_modules():
        assert name.startswith("sp_assets.defs."), f"{name} defines an asset outside defs/"


def test_sql_lives_in_storage_only():
    found = [f"{mod.path.relative_to(PACKAGE.parent)}:{node.lineno}"
             for mod in MODULES.values() if not mod.name.startswith("sp_assets.storage")
             for node in _string_constants(mod) if SQL.search(node.value)]
    assert not found, f"SQL text outside sp_assets/storage/: {found}"


def test_the_sql_check_recognises_sql():
    assert SQL.search("SELECT a, b FROM t WHERE x = ?") and SQL.search("insert into t by name select 1")
    assert SQL.search("CREATE OR REPLACE VIEW v AS SELECT 1") and not SQL.search("a pair of images, edited once")


def test_no_module_imports_another_modules_private_names():
    bad = [f"{mod.name} imports {n} from {source}" for mod in MODULES.values()
           for source, names in mod.imports.items() for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


def test_html_css_js_are_files_not_python_strings():
    found = [f"{mod.path.relative_to(PACKAGE.parent)}:{node.lineno}" for mod in MODULES.values()
             for node in _string_constants(mod) if MARKUP.search(node.value)]
    assert not found, f"markup in Python strings (move it to a template under static/): {found}"


def test_functions_are_short():
    long = [f"{mod.path.relative_to(PACKAGE.parent)}:{fn.name} ({n} lines)" for mod, fn, n in _functions()
            if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_asset_functions_read_call_write_report():
    assets = _asset_modules()
    long = [f"{mod.name}.{fn.name} ({n} lines)" for mod, fn, n in _functions()
            if mod.name in assets and fn.decorator_list and n > MAX_ASSET_LINES]
    assert not long, f"asset functions over {MAX_ASSET_LINES} lines: {long}"


def test_views_ship_as_sql_files():
    sql_dir = PACKAGE / "storage" / "sql"
    names = {p.stem for p in sql_dir.glob("*.sql")}
    from sp_assets.storage.schema import VIEWS

    assert set(VIEWS) <= names
