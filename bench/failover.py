#!/usr/bin/env python3
"""Zync with two trackers: how long sync stops when the primary dies.

A primary tracker, its backup (`zync-tracker --backup-of`), and two peers
given both (`--tracker PRIMARY,BACKUP`), with the default 1 s heartbeat.
Peer 1 writes a new small file every `--every` ms; the primary is SIGKILLed
in the middle, and restarted later (`--freeze`: SIGSTOPped, as a machine
that vanishes without closing its connections, and SIGCONTed). Printed:

- resume: from the kill until the first file written after it is on peer 2
  (the issue's target: <= 3 s);
- the longest any file took to arrive, before and after the kill;
- lost: files written that never reached peer 2 (target: 0), and whether
  both folders end identical after the primary is back and the peers have
  returned to it.

Release binaries on loopback, folders under a scratch directory.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sync_bench import ROOT, build_release, cpu_seconds, free_port, scratch, stop, use_key, wait  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=50, help="ms between two new files on peer 1 (default 50)")
    ap.add_argument("--before", type=float, default=3, help="seconds of writing before the kill (default 3)")
    ap.add_argument("--down", type=float, default=8, help="seconds the primary stays dead (default 8)")
    ap.add_argument("--after", type=float, default=5, help="seconds of writing after it is back (default 5)")
    ap.add_argument("--freeze", action="store_true",
                    help="SIGSTOP the primary instead of killing it (a machine gone silent: no connection "
                         "breaks, so only missed heartbeats tell), and SIGCONT it instead of a restart")
    ap.add_argument("--scratch", default=os.path.join(ROOT, "target", "bench"), help="scratch folder")
    args = ap.parse_args()

    bin_dir = build_release()
    work = scratch(args.scratch)
    use_key(bin_dir, work, False)
    procs = {}
    try:
        primary, backup = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        trackers = f"{primary},{backup}"
        log = lambda name: open(os.path.join(work, f"{name}.log"), "a")

        def tracker(name, listen, *extra):
            procs[name] = subprocess.Popen([f"{bin_dir}/zync-tracker", "--listen", listen, "--publish",
                                            "127.0.0.1:0", *extra], stderr=log(name))

        tracker("primary", primary)
        tracker("backup", backup, "--backup-of", primary)
        dirs = {n: os.path.join(work, n) for n in ("p1", "p2")}
        for name, folder in dirs.items():
            procs[name] = subprocess.Popen([f"{bin_dir}/zync-peer", "--tracker", trackers, "run", "--dir", folder,
                                            "--listen", "127.0.0.1:0", "--name", name], stderr=log(name))
        os.makedirs(dirs["p1"], exist_ok=True)
        with open(os.path.join(dirs["p1"], "warm-up.txt"), "w") as f:
            f.write("warm up")
        wait(lambda: os.path.exists(os.path.join(dirs["p2"], "warm-up.txt")), 60, "the cluster to sync")

        written, arrived = {}, {}
        events = {}
        t0 = time.monotonic()
        end = t0 + args.before + args.down + args.after
        i = 0
        next_write = t0
        while time.monotonic() < end or (len(arrived) < len(written) and time.monotonic() < end + 30):
            now = time.monotonic()
            if "kill" not in events and now - t0 >= args.before:
                if args.freeze:
                    procs["primary"].send_signal(signal.SIGSTOP)
                else:
                    procs["primary"].send_signal(signal.SIGKILL)
                    procs["primary"].wait()
                events["kill"] = time.monotonic()
            if "kill" in events and "restart" not in events and now - events["kill"] >= args.down:
                if args.freeze:
                    procs["primary"].send_signal(signal.SIGCONT)
                else:
                    tracker("primary", primary)
                events["restart"] = time.monotonic()
            if now >= next_write and now < end:
                name = f"f{i:05d}.txt"
                with open(os.path.join(dirs["p1"], name), "w") as f:
                    f.write(f"file {i}\n")
                written[name] = time.monotonic()
                i += 1
                next_write += args.every / 1000
            for name in written.keys() - arrived.keys():
                if os.path.exists(os.path.join(dirs["p2"], name)):
                    arrived[name] = time.monotonic()
            time.sleep(0.005)

        kill = events["kill"]
        after_kill = sorted((t, n) for n, t in written.items() if t >= kill)
        first = next((n for t, n in after_kill), None)
        resume = arrived[first] - kill if first in arrived else float("inf")
        delay = lambda names: max((arrived.get(n, float("inf")) - written[n] for n in names), default=0)
        before = [n for n, t in written.items() if t < kill]
        during = [n for n, t in written.items() if kill <= t < events["restart"]]
        later = [n for n, t in written.items() if t >= events["restart"]]
        lost = [n for n in written if n not in arrived]

        def same():
            a = sorted(os.listdir(dirs["p1"]))
            return a == sorted(os.listdir(dirs["p2"]))
        wait(same, 30, "both folders to list the same files")
        backs = sum(open(os.path.join(work, f"{p}.log")).read().count("event=tracker_failover") for p in dirs)
        how = ("frozen (SIGSTOP)", "thawed") if args.freeze else ("killed", "restarted")
        print(f"{len(written)} files written, one every {args.every} ms; primary {how[0]} after {args.before:.0f} s, "
              f"{how[1]} {args.down:.0f} s later")
        print(f"resume through the backup: {resume:6.2f} s  ({how[0].split()[0]} -> first file written after it "
              f"on peer 2)")
        print(f"longest arrival before the kill: {delay(before):6.2f} s; while on the backup: {delay(during):6.2f} s; "
              f"after the primary came back: {delay(later):6.2f} s")
        print(f"lost: {len(lost)} of {len(written)}; failovers logged by the peers: {backs}; folders identical: yes")
        print("CPU-seconds: " + ", ".join(f"{n} {cpu_seconds(p.pid):.2f}" for n, p in procs.items()))
    finally:
        stop(procs.values(), work)


if __name__ == "__main__":
    main()
