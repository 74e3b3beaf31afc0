"""What checking cached artifacts costs: hashing each waveform cache and teacher run once per process.

    python bench/integrity.py [--artifacts artifacts/ci]

Prints, for every cached file a later chapter checks (the waveform caches, every run's model.pt and
logits), its size and the time of the first check in a process (reads and hashes the file) and of a
second (a stat), and the totals.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asc_lib.integrity import verify  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts/ci"))
    args = parser.parse_args()
    checks = []
    for record in sorted((args.artifacts / "waves").glob("wave_*.json")):
        checks.append((record.with_suffix(".npy"), json.loads(record.read_text())["blake2b"]))
    for manifest in sorted(args.artifacts.glob("*/*/manifest.json")):
        for name, digest in json.loads(manifest.read_text()).get("files", {}).items():
            checks.append((manifest.parent / name, digest))
    if not checks:
        print(f"nothing to check under {args.artifacts}: run the chapters first")
        return 1
    rows = []
    for path, digest in checks:
        t0 = time.perf_counter()
        verify(path, digest, "bench")
        t1 = time.perf_counter()
        verify(path, digest, "bench")
        rows.append((path, path.stat().st_size, t1 - t0, time.perf_counter() - t1))
    waves = [r for r in rows if r[0].parent.name == "waves"]
    runs = [r for r in rows if r[0].parent.name != "waves"]
    print(f"{'what':<40} {'files':>5} {'MB':>9} {'first check s':>14} {'again s':>9}")
    for label, group in (("waveform caches", waves), ("teacher and student run files", runs), ("all", rows)):
        print(f"{label:<40} {len(group):>5} {sum(r[1] for r in group) / 1e6:>9.1f} "
              f"{sum(r[2] for r in group):>14.2f} {sum(r[3] for r in group):>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
