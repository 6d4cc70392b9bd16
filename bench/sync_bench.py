#!/usr/bin/env python3
"""Zync sync benchmark: one run, figures printed.

1. Small files: time from writing a file on peer 1 to an identical copy on
   peers 2 and 3 (median and max of 20 files).
2. Large file: time to sync one 1 GiB file to two peers, next to `cp` +
   `sync` of the same file on the same disk, and each peer's peak memory.

Release binaries, one tracker and three peers on loopback, folders under
a scratch directory on the same file system as the cp comparison.
"""
import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, timeout, what):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if cond():
            return
        time.sleep(0.001)
    sys.exit(f"timed out waiting for {what}")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_event(path, event, rel):
    """(wall-clock seconds, fields) of the first `event` line for `rel` in a peer's log."""
    import datetime
    import re
    with open(path) as f:
        for line in f:
            if f"event={event}" in line and f"path={rel}" in line:
                ts = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
                return ts, dict(re.findall(r"(\w+)=(\S+)", line))
    return None, {}


def has(path, data_len, digest):
    try:
        if os.path.getsize(path) != data_len:
            return False
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest() == digest
    except OSError:
        return False


def build_release():
    """Builds the tracker and peer in release mode; returns their folder."""
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "zync-tracker", "-p", "zync-peer"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release")


def use_key(bin_dir, work, insecure=False):
    """Every process started from here on joins one cluster: with a new key
    (CURVE on every socket), or with --insecure (plaintext)."""
    if insecure:
        os.environ["ZYNC_INSECURE"] = "true"
        print("security: none (--insecure, plaintext)")
        return
    key = os.path.join(work, "cluster.key")
    subprocess.run([f"{bin_dir}/zync-peer", "keygen", key], check=True, stderr=subprocess.DEVNULL)
    os.environ["ZYNC_KEY_FILE"] = key
    print("security: CURVE (cluster key)")


def scratch(base):
    """A fresh folder under `base` for one run."""
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(dir=base)


def stop(procs, work):
    """Stops every process (SIGTERM, then SIGKILL after 5 s) and removes `work`."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="large file size (default 1024)")
    ap.add_argument("--files", type=int, default=20, help="small files (default 20)")
    ap.add_argument("--scratch", default=os.path.join(ROOT, "target", "bench"), help="scratch folder")
    ap.add_argument("--insecure", action="store_true",
                    help="run the cluster without a key (plaintext), to see what CURVE costs")
    args = ap.parse_args()

    bin_dir = build_release()
    work = scratch(args.scratch)
    use_key(bin_dir, work, args.insecure)
    procs = []
    try:
        port = free_port()
        tracker = f"127.0.0.1:{port}"
        log = lambda name: open(os.path.join(work, f"{name}.log"), "w")
        procs.append(subprocess.Popen([f"{bin_dir}/zync-tracker", "--listen", tracker, "--publish", "127.0.0.1:0"],
                                      stderr=log("tracker")))
        dirs = [os.path.join(work, f"p{i}") for i in (1, 2, 3)]
        peers = []
        for i, d in enumerate(dirs, 1):
            p = subprocess.Popen([f"{bin_dir}/zync-peer", "--tracker", tracker, "run", "--dir", d,
                                  "--listen", "127.0.0.1:0", "--name", f"p{i}"], stderr=log(f"p{i}"))
            procs.append(p)
            peers.append(p)
        out = lambda: subprocess.run([f"{bin_dir}/zync-peer", "--tracker", tracker, "peers", "--json"],
                                     capture_output=True, text=True).stdout
        wait(lambda: out().count('"name"') == 3, 30, "3 peers")

        # 1. Small files.
        lat = []
        for n in range(args.files):
            body = os.urandom(1000 + n)
            digest = hashlib.sha256(body).digest()
            name = f"small-{n}.txt"
            t = time.monotonic()
            with open(os.path.join(dirs[0], name), "wb") as f:
                f.write(body)
            wait(lambda: all(has(os.path.join(d, name), len(body), digest) for d in dirs[1:]), 30, name)
            lat.append((time.monotonic() - t) * 1000)
            time.sleep(0.05)
        print(f"small file to 2 peers:  median {statistics.median(lat):7.1f} ms   max {max(lat):7.1f} ms   (n={len(lat)})")

        # 2. Large file.
        size = args.size_mib * 1024 * 1024
        src = os.path.join(work, "big.src")
        h = hashlib.sha256()
        with open(src, "wb") as f:
            chunk = os.urandom(8 * 1024 * 1024)
            for i in range(size // len(chunk)):
                block = bytes([i % 256]) + chunk[1:]
                h.update(block)
                f.write(block)
        digest = h.digest()
        subprocess.run(["sync"], check=True)

        t = time.monotonic()
        subprocess.run(["cp", src, os.path.join(work, "big.cp")], check=True)
        subprocess.run(["sync"], check=True)
        cp_s = time.monotonic() - t
        os.remove(os.path.join(work, "big.cp"))
        subprocess.run(["sync"], check=True)

        # Move (not copy) into peer 1: the file appears complete at once.
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        wall0 = time.time()
        t = time.monotonic()
        os.rename(src, os.path.join(dirs[0], "big.bin"))
        targets = [os.path.join(d, "big.bin") for d in dirs[1:]]
        wait(lambda: all(os.path.exists(p) and os.path.getsize(p) == size for p in targets), 600, "big file")
        zync_s = time.monotonic() - t
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0)]
        for p in targets:
            if not has(p, size, digest):
                sys.exit(f"{p} differs from the source")
        mib = size / 2**20
        print(f"{args.size_mib} MiB to 2 peers:      {zync_s:7.2f} s  ({2 * mib / zync_s:6.0f} MiB/s delivered)")
        print(f"cp + sync, same disk:    {cp_s:7.2f} s  ({mib / cp_s:6.0f} MiB/s)")
        print(f"ratio zync / (cp+sync):  {zync_s / cp_s:7.2f}x   (target <= 4x)")
        hashed, _ = log_event(os.path.join(work, "p1.log"), "local_change", "big.bin")
        if hashed:
            print(f"  of which p1 hashing:   {hashed - wall0:7.2f} s")
        for i in (2, 3):
            _, f = log_event(os.path.join(work, f"p{i}.log"), "synced", "big.bin")
            print(f"  p{i} download (ms=):    {int(f.get('ms', '0')) / 1000:7.2f} s")
        names = ["tracker", "p1", "p2", "p3"]
        print("  CPU-seconds:          " + ", ".join(f"{n} {c:.2f}" for n, c in zip(names, cpu))
              + f" (sum {sum(cpu):.2f}, {os.cpu_count()} cores)")
        for i, p in enumerate(peers, 1):
            print(f"peak RSS p{i}:             {peak_rss_mb(p.pid):7.1f} MB   (target < 100 MB)")
    finally:
        stop(procs, work)


if __name__ == "__main__":
    main()
