#!/usr/bin/env python3
"""Zync soak: the randomized model test (peer/tests/model.rs) for many minutes.

Three real peers and a tracker on loopback. A driver applies random
operations (create, overwrite, append, delete, rename, folder rename; 0 B to
4 MiB) to random peers while it freezes peers (SIGSTOP), kills and restarts
them, and restarts the tracker. Every change must reach every running peer
within 10 s (30 s right after a fault); at the end every folder must equal
the driver's model exactly. Prints progress every minute, then operations,
faults, convergence times, and any divergence (with the seed that replays
it and where the whole logs were kept).

Usage: python3 bench/soak.py --minutes 30 [--seed N]
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30, help="how long to run (default 30)")
    ap.add_argument("--seed", type=int, help="replay one seed (default: a random one)")
    args = ap.parse_args()

    env = dict(os.environ, ZYNC_MODEL_SECONDS=str(int(args.minutes * 60)))
    if args.seed is not None:
        env["ZYNC_MODEL_SEED"] = str(args.seed)
    else:
        env["ZYNC_MODEL_SEEDS"] = "1"
    subprocess.run(["cargo", "build", "-q", "--locked", "--workspace", "--bins"], cwd=ROOT, check=True)
    cmd = ["cargo", "test", "-q", "--locked", "-p", "zync-peer", "--test", "model", "--", "--nocapture"]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary, failure, tail = None, [], []
    for line in proc.stdout:
        tail = (tail + [line])[-400:]
        if line.startswith("model seed=") and " at=" in line:
            print(f"  {line.strip()}", flush=True)
        elif line.startswith("model seeds"):
            print(line.strip(), flush=True)
        elif line.startswith("model seed="):
            summary = line.strip()
        elif "model test failed" in line or failure:
            failure.append(line.rstrip())
    rc = proc.wait()
    took = time.time() - start
    print()
    if summary and rc == 0:
        fields = dict(re.findall(r"(\w+)=(\S+)", summary))
        rows = [
            ("seed", fields.get("seed")),
            ("minutes", f"{took / 60:.1f}"),
            ("operations", fields.get("ops")),
            ("faults (freeze, kill, tracker restart)", fields.get("faults")),
            ("files at the end", fields.get("files")),
            ("convergence per change, median / p99 / max (ms)",
             f"{fields.get('converge_ms_median')} / {fields.get('converge_ms_p99')} / {fields.get('converge_ms_max')}"),
            ("divergence", fields.get("divergence")),
        ]
        for k, v in rows:
            print(f"{k:<50} {v}")
        return 0
    print("DIVERGENCE or failure:" if failure else f"the model test exited {rc}:")
    print("\n".join(failure[:60] if failure else [l.rstrip() for l in tail[-60:]]))
    return 1


if __name__ == "__main__":
    sys.exit(main())
