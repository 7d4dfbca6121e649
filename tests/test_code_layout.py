"""The package's shape stays readable: module and function sizes, signatures, private names.

These are the limits the layout was refactored to (stage subpackages, no module over ~800
lines, no function over ~120 lines or with more than 8 positional parameters, no import of
another module's private names).  A change that crosses one should split the piece, not
raise the limit.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "photometry_graph").rglob("*.py")) + [ROOT / "grid_mode.py"]
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120
MAX_POSITIONAL = 8


def _rel(path):
    return str(path.relative_to(ROOT))


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _body_lines(node):
    """Lines of a function without its docstring."""
    first = node.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str) and len(node.body) > 1):
        first = node.body[1]
    return node.end_lineno - first.lineno + 1


@pytest.fixture(scope="module")
def trees():
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in SOURCES}


def test_no_module_is_too_long():
    long = {_rel(p): n for p in SOURCES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long(trees):
    long = [f"{_rel(p)}:{f.lineno} {f.name} ({_body_lines(f)} lines)"
            for p, tree in trees.items() for f in _functions(tree)
            if _body_lines(f) > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code: {long}"


def test_no_function_takes_too_many_positional_parameters(trees):
    wide = []
    for p, tree in trees.items():
        for f in _functions(tree):
            names = [a.arg for a in f.args.posonlyargs + f.args.args if a.arg not in
                     ("self", "cls")]
            if len(names) > MAX_POSITIONAL:
                wide.append(f"{_rel(p)}:{f.lineno} {f.name} ({len(names)})")
    assert not wide, f"functions with more than {MAX_POSITIONAL} positional parameters: {wide}"


def test_no_module_imports_a_private_name_of_another(trees):
    private = []
    for p, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{_rel(p)}:{node.lineno} {node.module}.{alias.name}")
    assert not private, f"private names imported across modules: {private}"


def test_the_stage_layers_do_not_import_upwards(trees):
    # lower layers first; a module may import its own layer and the ones before it
    order = ["_log", "_stats", "_threads", "core", "_json", "stacking", "photometry",
             "blending", "datasets", "diagnostics", "pipeline"]
    rank = {name: k for k, name in enumerate(order)}

    def layer(parts):
        return parts[0] if parts and parts[0] in rank else None

    upward = []
    for p, tree in trees.items():
        if p.name == "__init__.py" and p.parent.name == "photometry_graph" or \
                p.name == "grid_mode.py":
            continue
        parts = list(p.relative_to(ROOT / "photometry_graph").with_suffix("").parts)
        own = layer(parts)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = parts[:len(parts) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            other = layer(target)
            if own and other and rank[other] > rank[own]:
                upward.append(f"{_rel(p)}:{node.lineno} imports {'.'.join(target)}")
    assert not upward, f"imports from a later stage: {upward}"


def test_each_subpackage_exports_its_modules_public_names(trees):
    for init in sorted((ROOT / "photometry_graph").glob("*/__init__.py")):
        package = init.parent
        expected = []
        for path in sorted(package.glob("*.py")):
            if path.name == "__init__.py" or path.name.startswith("_"):
                continue
            names = next((ast.literal_eval(n.value) for n in trees[path].body
                          if isinstance(n, ast.Assign)
                          and any(getattr(t, "id", None) == "__all__" for t in n.targets)),
                         None)
            assert names is not None, f"{_rel(path)} has no __all__"
            expected += names
        exported = next(ast.literal_eval(n.value) for n in trees[init].body
                        if isinstance(n, ast.Assign)
                        and any(getattr(t, "id", None) == "__all__" for t in n.targets))
        assert sorted(exported) == sorted(expected), _rel(init)
