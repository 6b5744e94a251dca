"""Run every benchmark (each in its own process) and print one summary table.

    .venv/bin/python bench/run_all.py [NAME ...]

(names: reflector sender engine monitor accuracy scale)

Each benchmark also runs alone (``.venv/bin/python bench/NAME.py --help``).  The summary is
written to bench/results.md as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _lib import Row, table  # noqa: E402

ORDER = ["reflector", "sender", "engine", "monitor", "accuracy", "scale"]


def main() -> int:
    names = sys.argv[1:] or ORDER
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as results:
        path = results.name
    env = {**os.environ, "BENCH_RESULTS": path}
    failed = []
    started = time.monotonic()
    for name in names:
        print(f"\n######## bench/{name}.py", flush=True)
        begin = time.monotonic()
        code = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py")], env=env, check=False
        ).returncode
        print(
            f"######## bench/{name}.py: exit {code} in {time.monotonic() - begin:.0f} s", flush=True
        )
        if code:
            failed.append(name)
    rows = [Row(**json.loads(line)) for line in Path(path).read_text().splitlines() if line]
    os.unlink(path)
    for name in failed:
        rows.append(
            Row(name, "(benchmark)", None, "", note="crashed: see its output above", passed=False)
        )
    summary = table(rows)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"\n======== summary ({stamp}, {time.monotonic() - started:.0f} s, {os.cpu_count()} CPUs)\n"
    )
    print(summary)
    (HERE / "results.md").write_text(
        f"Measured {stamp} with `make bench` ({os.cpu_count()} CPUs).\n\n{summary}\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
