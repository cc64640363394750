"""The layering rules that keep the API light and the engine independent."""

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


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


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
