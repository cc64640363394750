"""The layering rules that keep the API light and the engine independent, read from the code's own
imports (also those inside functions, which hide a cycle from the interpreter but not from a reader):

    rlhf_engine      imports neither service nor worker
    service.shared   imports neither service.api nor the entry points nor worker
    worker           imports service.shared, never service.api or service.app
    service          never imports worker, torch, transformers or peft

and no package has an import cycle, and no module takes another module's `_private` name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft")


def test_importing_the_api_does_not_import_torch():
    probe = ("import sys, service.app; "
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"service.app imported {done.stdout.strip()}"


PACKAGES = ("rlhf_engine", "service", "worker")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _our_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports. `from a.b import c` is an edge to a.b.c when c is a
    module, else to a.b."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_edges(_our_modules())) == []


def test_the_cycle_finder_finds_a_cycle():
    # The rule above is only as good as the finder: a loop round three modules, and a package
    # whose __init__ imports a module that imports the package.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"p": {"p.m"}, "p.m": {"p"}}) == [["p", "p.m"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_takes_another_modules_private_names():
    modules = _our_modules()
    offenders = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module != name:
                offenders += [f"{name} takes {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []


FORBIDDEN = {  # importer prefix -> what it must not import
    "rlhf_engine": ("service", "worker"),
    "service.shared": ("service.api", "service.app", "service.admin", "service.migrate", "worker"),
    "service": ("worker",),
    "worker": ("service.api", "service.app", "service.admin"),
}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_each_layer_imports_only_what_it_may():
    offenders = [f"{name} imports {target}"
                 for name, targets in _edges(_our_modules()).items() for target in sorted(targets)
                 for importer, banned in FORBIDDEN.items() if _under(name, importer)
                 for b in banned if _under(target, b)]
    assert offenders == []


def test_engine_never_imports_service_or_worker():
    offenders = [f"{path.relative_to(REPO)} imports {name}"
                 for path in sorted((REPO / "rlhf_engine").rglob("*.py"))
                 for name in _imported_modules(path)
                 if name.split(".")[0] in ("service", "worker")]
    assert offenders == []


def test_service_never_imports_the_heavy_parts():
    """Static twin of the import test: also catches imports inside functions."""
    forbidden = (*HEAVY, "worker", "rlhf_engine.models", "rlhf_engine.train", "rlhf_engine.losses",
                 "rlhf_engine.rollout")
    offenders = [f"{path.relative_to(REPO)} imports {name}"
                 for path in sorted((REPO / "service").rglob("*.py"))
                 for name in _imported_modules(path)
                 if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert offenders == []
