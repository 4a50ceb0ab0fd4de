"""``chamberlain validate DIR``: check an intent repository before it is pushed.

Exit codes follow lint tools: 0 valid, 1 problems found, 2 usage error (so CI can tell a broken
repository from a broken invocation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chamberlain.model.loader import load_dir
from chamberlain.model.validate import check, summarize

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", type=Path, help="intent repository root")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one 'file:line:col: code: message' line per problem; json: one object",
    )


def run(args: argparse.Namespace) -> int:
    root: Path = args.directory
    if not root.is_dir():
        print(f"chamberlain validate: error: {root} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    result = load_dir(root)
    problems = check(result)
    summary = summarize(result)
    if args.format == "json":
        report = {
            "valid": not problems,
            "problems": [p.to_json() for p in problems],
            "summary": {**summary, "problems": len(problems)},
        }
        print(json.dumps(report, indent=2))
    else:
        for problem in problems:
            print(problem.format())
        if problems:
            files = len({p.file for p in problems})
            print(f"invalid: {len(problems)} problem(s) in {files} file(s)")
        else:
            print(
                f"ok: {summary['documents']} documents, {summary['secrets']} secrets, "
                f"{summary['environments']} environments"
            )
    return EXIT_PROBLEMS if problems else EXIT_OK
