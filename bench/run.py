"""Run every benchmark in bench/ and print one `name: value` line per figure.

Each benchmark is a script ``bench/bench_*.py`` that prints its own figures as ``name: value``
lines (ratios named ``*_ratio``, measured against a baseline run side by side in the same
script). Each runs in its own process so that one benchmark's imports, threads or servers cannot
skew another's. Lines that are not figures are passed through to stderr.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

FIGURE = re.compile(r"^[a-z][a-z0-9_]*: -?[0-9]+(\.[0-9]+)?$")


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    wanted = set(argv)
    scripts = sorted(p for p in here.glob("bench_*.py") if not wanted or p.stem in wanted)
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=here.parent
        )
        for line in proc.stdout.splitlines():
            if FIGURE.match(line.strip()):
                print(line.strip(), flush=True)
            else:
                print(f"[{script.stem}] {line}", file=sys.stderr)
        if proc.returncode != 0:
            failed.append(script.stem)
            print(f"[{script.stem}] failed (exit {proc.returncode}):", file=sys.stderr)
            print(proc.stderr[-4000:], file=sys.stderr)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
