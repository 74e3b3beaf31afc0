#!/usr/bin/env python3
"""Time the README's two commands the way a new user meets them, and print a table.

Clones the checkout's HEAD into a temporary folder, points pip at an empty cache (as on a fresh
machine: every wheel is downloaded), then runs

    python3 tasks.py book   (first: creates .venv and installs; again: reuses it)
    python3 tasks.py test   (reusing the .venv that the book command made)

    python3 bench/readme_commands.py
"""

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd, cwd, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main():
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "book"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "PIP_CACHE_DIR": str(Path(tmp) / "pip-cache")}
        rows = [
            ("python3 tasks.py book", "fresh: new .venv, empty pip cache", timed(["python3", "tasks.py", "book"], clone, env)),
            ("python3 tasks.py book", "again: .venv reused", timed(["python3", "tasks.py", "book"], clone, env)),
            ("python3 tasks.py test", ".venv reused", timed(["python3", "tasks.py", "test"], clone, env)),
        ]
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'command':<24} {'situation':<36} {'wall time':>10}")
    for cmd, situation, seconds in rows:
        print(f"{cmd:<24} {situation:<36} {seconds / 60:7.1f} min")


if __name__ == "__main__":
    main()
