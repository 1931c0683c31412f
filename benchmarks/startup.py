"""Cold start-up times of lenszoo's everyday commands, against ``import torch``, in one run.

Each command runs in a fresh interpreter (so nothing is cached in the process; the OS file
cache is warm after the first repeat) and the best of ``--repeats`` wall times is shown: the
fastest run is the one least disturbed by other work on the machine.

    python benchmarks/startup.py             # ~1 minute on 2 cores
    python benchmarks/startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "import lenszoo": "import lenszoo",
    "lenszoo list": "from lenszoo.cli import main; main(['list'], standalone_mode=False)",
    "lenszoo info c8_steerable": "from lenszoo.cli import main; main(['info', 'c8_steerable'], standalone_mode=False)",
    "lenszoo.load(c8_steerable, classify, B)":
        "import lenszoo; lenszoo.load('c8_steerable', task='classify', dataset='B')",
}


def best_time(code: str, repeats: int, env: dict) -> float:
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{code!r} failed: {done.stderr.strip().splitlines()[-1]}")
        fastest = min(fastest, elapsed)
    return fastest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (default 3)")
    args = parser.parse_args(argv)
    env = {**os.environ, "LENSZOO_PLUGINS": os.environ.get("LENSZOO_PLUGINS", "")}
    times = {name: best_time(code, args.repeats, env) for name, code in COMMANDS.items()}
    torch_s = times["import torch"]
    print(f"best of {args.repeats} cold runs, Python {sys.version.split()[0]}\n")
    print("| command | seconds | vs import torch |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| `{name}` | {seconds:.2f} | {seconds / torch_s:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
