"""Command-line entry point: ``chamberlain <command>``.

Each command lives in ``chamberlain.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``chamberlain
validate`` does not pay for Flask, hvac or the kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("chamberlain.commands.validate", "validate an intent repository"),
    "up": ("chamberlain.commands.up", "run every step locally with an embedded OpenBao"),
    "plan": (
        "chamberlain.commands.plan",
        "show what issue-secrets would change in an environment (exit 2: changes pending)",
    ),
    "apply": (
        "chamberlain.commands.apply",
        "run issue-secrets for an environment from the command line (recovery)",
    ),
    "status": ("chamberlain.commands.status", "managed secrets and leases of an environment"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chamberlain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    module = importlib.import_module(COMMANDS[args.command][0])
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
