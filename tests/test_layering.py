"""The package's floors: imports run one way, Keras internals in one module.

Every module of `keras_vib` (and the command's entry module) is parsed;
imports inside functions count as much as those at the top.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_vib"
ADAPTER = "keras_vib._keras"


def _modules():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    found["_keras_vib_cli"] = ROOT / "_keras_vib_cli.py"
    return found


MODULES = _modules()


def _imports(name, path):
    """The keras_vib modules (and `_keras_vib_cli`) `name` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # The deepest module of ours the name refers to.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _parents(name):
    """A module's packages: importing `a.b.c` runs `a` and `a.b` first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & set(MODULES)


def test_no_import_cycle_inside_keras_vib():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # A package's __init__ may import its own submodules (that is how it
    # exports them); a submodule importing its package's __init__ is the
    # edge that counts, so drop the package -> own-submodule edges.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if name not in _parents(d)}
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cli_entry_is_the_top_floor():
    assert not any("_keras_vib_cli" in _imports(n, p) for n, p in MODULES.items())


def _private_keras_uses(path):
    """`keras.src` names and `x._name` attributes used in a module.

    An underscored attribute counts unless it is read from `self`/`cls` or
    from one of keras_vib's own modules (`_validate.fail`).
    """
    tree = ast.parse(path.read_text())
    own = {"self", "cls"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "keras_vib"
        ):
            own |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            own |= {
                alias.asname or alias.name
                for alias in node.names
                if alias.name.startswith("keras_vib")
            }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "keras.src" in node.value:
                found.append(f"line {node.lineno}: string {node.value!r}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
            if any(n.startswith("keras.src") for n in names):
                found.append(f"line {node.lineno}: import of keras.src")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in own:
                continue
            found.append(f"line {node.lineno}: attribute .{attr}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
            "getattr",
            "hasattr",
            "setattr",
        ):
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                name = node.args[1].value
                if isinstance(name, str) and name.startswith("_"):
                    if not name.startswith("__"):
                        found.append(f"line {node.lineno}: {node.func.id} {name!r}")
    return found


def test_private_keras_names_only_in_the_adapter():
    offenders = {
        name: uses
        for name, path in MODULES.items()
        if name != ADAPTER and (uses := _private_keras_uses(path))
    }
    assert offenders == {}


def test_the_adapter_names_each_use():
    doc = ast.get_docstring(ast.parse((PACKAGE / "_keras.py").read_text()))
    for name in ("_functional", "_nodes_by_depth", "fill_in", "keras.src"):
        assert name in doc
    assert _private_keras_uses(PACKAGE / "_keras.py")  # the checker sees them


def test_only_the_layers_write_their_variables():
    # An object owns its state: the gates close, reopen, freeze and scale
    # their KL term through their own methods; no other module assigns a
    # variable of theirs.
    writers = {}
    for name, path in MODULES.items():
        if name == "keras_vib.layers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("assign", "assign_add", "assign_sub")
            ):
                writers.setdefault(name, []).append(node.lineno)
    assert writers == {}
