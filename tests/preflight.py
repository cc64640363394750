"""Before the suite runs (scripts/test.sh): print the versions a failure elsewhere is compared
against, and stop with one clear message if anything the tests need is missing.

    python -m tests.preflight engine test

Each extra named is read from the installed project's own metadata (pyproject.toml's
`[project.optional-dependencies]`), so this list can never drift from the install: a requirement
that is absent or at a version outside its range is an install error here, not a collection error
(or a silent skip) later. With CI set, the dashboard's browser is required as well.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib import metadata

from packaging.requirements import Requirement

PROJECT = "rlhf-service"
REPORTED = ("torch", "transformers", "peft", "fastapi", "celery", "sqlalchemy", "pytest")


def version_report() -> str:
    found = []
    for name in REPORTED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"python {platform.python_version()} ({sys.prefix}); " + ", ".join(found)


def unmet(extras: list[str]) -> list[str]:
    """The requirements of the project and of `extras` that the environment does not satisfy."""
    problems = []
    for line in metadata.requires(PROJECT) or []:
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ["", *extras]):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req} is not installed")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req} is needed, {have} is installed")
    return problems


def chromium() -> str | None:
    """Debian's chromium, which the dashboard tests drive headless (never a downloaded browser)."""
    return next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser"))), None)


def chromedriver() -> str | None:
    return shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)


def main(extras: list[str]) -> int:
    print(version_report(), flush=True)
    problems = unmet(extras)
    if os.environ.get("CI"):
        problems += [f"{name} is not installed (Debian: apt-get install chromium chromium-driver)"
                     for name, path in (("chromium", chromium()), ("chromedriver", chromedriver())) if path is None]
    if problems:
        print("error: the test environment is incomplete; run `bash scripts/install.sh "
              f"{','.join(extras)}` (scripts/test.sh does):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
