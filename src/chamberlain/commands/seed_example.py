"""Seed a local intent repository from examples/intent (used by ``make up``).

``make up`` watches a real git repository so that committing to it behaves like pushing to a
forge. The first run creates that repository from the example intent; later runs leave it
alone, because by then it holds the user's own commits.

Usage: ``python -m chamberlain.commands.seed_example --into DIR [--example DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import chamberlain

AUTHOR = ["-c", "user.name=chamberlain", "-c", "user.email=chamberlain@localhost"]


def example_dir() -> Path:
    """examples/intent of the source checkout (the example is not packaged in the wheel)."""
    return Path(chamberlain.__file__).resolve().parents[2] / "examples" / "intent"


def is_git_repo(path: Path) -> bool:
    return (path / ".git").exists()


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", *AUTHOR, *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )


def seed(into: Path, example: Path) -> str:
    """Create ``into`` as a git repo holding ``example``; return what was done, for humans."""
    if is_git_repo(into):
        return f"{into} is already a git repository: left alone"
    if not example.is_dir():
        raise FileNotFoundError(f"example intent not found at {example}")
    if into.exists() and any(into.iterdir()):
        raise FileExistsError(f"{into} exists, is not empty and is not a git repository")
    into.mkdir(parents=True, exist_ok=True)
    shutil.copytree(example, into, dirs_exist_ok=True)
    _git(into, "init", "-q", "-b", "main")
    _git(into, "add", "-A")
    _git(into, "commit", "-q", "-m", f"Seed intent from {example.name} example")
    return f"created {into} from {example} (git repository, branch main, 1 commit)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed_example", description=__doc__.splitlines()[0])
    parser.add_argument("--into", type=Path, required=True, help="repository to create")
    parser.add_argument("--example", type=Path, default=None, help="default: examples/intent")
    args = parser.parse_args(argv)
    try:
        print(seed(args.into, args.example or example_dir()))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        print(f"seed_example: {detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
