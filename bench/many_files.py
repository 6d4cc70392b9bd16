#!/usr/bin/env python3
"""Zync at scale: a folder of many small files, one run, figures printed.

1. Peer 1 starts on a folder of N small files (default 20,000 of 100 bytes,
   100 per folder): time until the tracker has acknowledged them all (scan,
   hash, register in pages; peer 1 logs `event=scan_reported`), checked
   against the tracker's listing.
2. Peer 2 joins with an empty folder: time until it holds every file
   (snapshot in pages, one verified download per file).

3. Peak resident memory (VmHWM) and CPU-seconds of the tracker and both peers.
4. Peer 1 restarts with nothing changed: time until the tracker has its
   files again (`event=scan_reported`), and how many files its start-up scan
   sent to be hashed (none, if the index kept every record).

Release binaries on loopback, folders under a scratch directory.

The waits are cheap on purpose: on a 2-core machine, listing a million
entries or walking a million files every 0.2 s takes CPU from the
processes being measured. Peer 1's registration is read from its log
(the listing is asked for once, after the clock stops), and peer 2's
folder is walked only once the last file (in path order, about the order
it fetches in) is there.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sync_bench import (ROOT, build_release, cpu_seconds, free_port, peak_rss_mb, scratch, stop,  # noqa: E402
                        use_key, wait)


def count_files(folder):
    n = 0
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".zync"]
        n += len(files)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000, help="number of files (default 20000)")
    ap.add_argument("--bytes", type=int, default=100, help="size of each file (default 100)")
    ap.add_argument("--scratch", default=os.path.join(ROOT, "target", "bench"), help="scratch folder")
    ap.add_argument("--insecure", action="store_true", help="run the cluster without a key (plaintext)")
    args = ap.parse_args()

    bin_dir = build_release()
    work = scratch(args.scratch)
    use_key(bin_dir, work, args.insecure)
    procs = {}
    try:
        p1_dir, p2_dir = os.path.join(work, "p1"), os.path.join(work, "p2")
        for i in range(args.files):
            d = os.path.join(p1_dir, f"dir{i // 100:04d}")
            os.makedirs(d, exist_ok=True)
            body = f"file {i} ".encode().ljust(args.bytes, b".")[: args.bytes]
            with open(os.path.join(d, f"file-{i:06d}.txt"), "wb") as f:
                f.write(body)
        subprocess.run(["sync"], check=True)

        tracker = f"127.0.0.1:{free_port()}"
        log = lambda name: open(os.path.join(work, f"{name}.log"), "w")
        procs["tracker"] = subprocess.Popen(
            [f"{bin_dir}/zync-tracker", "--listen", tracker, "--publish", "127.0.0.1:0"], stderr=log("tracker"))

        def peer(name, folder):
            procs[name] = subprocess.Popen([f"{bin_dir}/zync-peer", "--tracker", tracker, "run", "--dir", folder,
                                            "--listen", "127.0.0.1:0", "--name", name], stderr=log(name))

        def listed():
            out = subprocess.run([f"{bin_dir}/zync-peer", "--tracker", tracker, "ls", "--json"],
                                 capture_output=True, text=True).stdout
            try:
                return len(json.loads(out))
            except ValueError:
                return 0

        def logged(name):  # a restarted peer's log is started anew
            with open(os.path.join(work, f"{name}.log")) as f:
                return f.read()

        t = time.monotonic()
        peer("p1", p1_dir)
        # Registration comes after the walk; the last files hashed follow as
        # updates, and p1 says when the tracker has acknowledged them all.
        wait(lambda: "event=scan_reported" in logged("p1") or time.sleep(0.05), 600, "peer 1 to report its files")
        registered = time.monotonic() - t
        # Checked once, untimed: listing a million entries takes the
        # tracker seconds, which polling would add to the figure.
        listing = listed()
        if listing != args.files:
            sys.exit(f"peer 1 said it had reported every file, but the tracker lists {listing}")

        last = os.path.join(f"dir{(args.files - 1) // 100:04d}", f"file-{args.files - 1:06d}.txt")

        def holds_all():
            if not os.path.exists(os.path.join(p2_dir, last)):
                return time.sleep(0.05)
            return count_files(p2_dir) == args.files or time.sleep(0.2)

        t = time.monotonic()
        peer("p2", p2_dir)
        wait(holds_all, 1800, "peer 2 to hold every file")
        joined = time.monotonic() - t
        with open(os.path.join(p1_dir, last), "rb") as a, open(os.path.join(p2_dir, last), "rb") as b:
            if a.read() != b.read():
                sys.exit(f"{last} differs on peer 2")

        usage = {name: (peak_rss_mb(p.pid), cpu_seconds(p.pid)) for name, p in procs.items()}

        # 4. Peer 1 restarts with nothing changed: time until the tracker
        # has its files again, and how many files its scan sent to be hashed.
        procs["p1"].terminate()
        procs["p1"].wait()
        t = time.monotonic()
        peer("p1", p1_dir)
        wait(lambda: "event=scan_reported" in logged("p1") or time.sleep(0.05), 600, "peer 1 to report again")
        restart = time.monotonic() - t
        scan = next((line for line in logged("p1").splitlines() if "scanned folder" in line), "")
        to_hash = scan.split("to_hash=")[1].split()[0] if "to_hash=" in scan else "?"

        print(f"{args.files} files of {args.bytes} B")
        print(f"peer 1 scanned and registered: {registered:7.2f} s  ({args.files / registered:7.0f} files/s)")
        print(f"late joiner holds them all:    {joined:7.2f} s  ({args.files / joined:7.0f} files/s)")
        print(f"peer 1 restarted, registered:  {restart:7.2f} s  (files re-hashed: {to_hash})")
        for name, (rss, cpu) in usage.items():
            print(f"{name:8} peak RSS {rss:7.1f} MB   CPU {cpu:6.2f} s")
    finally:
        stop(procs.values(), work)


if __name__ == "__main__":
    main()
