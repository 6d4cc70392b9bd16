#!/usr/bin/env python3
"""Zync against Syncthing, side by side: same machine, same run, same data.

Three nodes of each on loopback (Zync: a tracker and three peers, with a
cluster key; Syncthing: three instances configured here through their
config file and REST API, file watcher on with its shortest delay, 1 s,
no discovery, relays or NAT). For each scenario, the seconds from the end
of the write on node A until B and C hold identical copies, the median of
--runs runs, with `cp`+`sync` or `rsync` of the same data as the floor:

  1 KiB file           median of --files single files, one at a time
  1 x 256 MiB          a new file moved into A
  1 MiB in 256 MiB     1 MiB overwritten in the middle of that file, in place
  1 KiB inserted       1 KiB inserted in its middle (a new file renamed over it)
  5,000 x 4 KiB        a tree of 50 folders moved into A
  1 x 1 GiB            a new file moved into A

`--only` picks scenarios (1k, 256m, tree, 1g) and `--systems` the systems.
Unison (if on the PATH) is timed as a one-shot `unison A B; unison A C` of
every change but the 1 KiB files, beside the floors: it has no watcher here
(Debian ships no unison-fsmonitor), so it is an anchor for the work, not
for the latency.

Also bytes fetched by B and C (Zync: the `fetched=` of their `synced`
lines; Syncthing: its connection counters), and each process's peak RSS and
CPU-seconds. Syncthing is used if it is on the PATH (`apt-get install
syncthing`); the script installs nothing. Prints a table; asserts nothing.
"""
import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sync_bench import ROOT, cpu_seconds, free_port, peak_rss_mb  # noqa: E402

MIB = 1024 * 1024


def wait(cond, timeout, what, step=0.002):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if cond():
            return time.monotonic()
        time.sleep(step)
    sys.exit(f"timed out waiting for {what}")


def rss_mb(pid):
    try:
        return peak_rss_mb(pid)
    except OSError:
        return float("nan")


def cpu_s(pid):
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def tree_of(pid):
    """`pid` and all its descendants (Syncthing runs its worker as a child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def tree_cpu_s(pid):
    return sum(cpu_s(p) for p in tree_of(pid))


def tree_rss_mb(pid):
    return sum(rss_mb(p) for p in tree_of(pid) if rss_mb(p) == rss_mb(p))


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def random_file(path, size):
    chunk = os.urandom(8 * MIB)
    with open(path, "wb") as f:
        left = size
        i = 0
        while left > 0:
            n = min(left, len(chunk))
            f.write(bytes([i % 256]) + chunk[1:n])
            left -= n
            i += 1


# Where the edit and the insertion happen in the 256 MiB file.
MIDDLE = 128 * MIB + 12345


def overwrite_middle(path, patch):
    """Overwrites the bytes at MIDDLE of `path` with `patch`, in place."""
    with open(path, "r+b") as f:
        f.seek(MIDDLE)
        f.write(patch)


def insert_middle(src, dst):
    """Writes `src` to `dst` with 1 KiB of random bytes inserted at MIDDLE."""
    with open(src, "rb") as old, open(dst, "wb") as new:
        new.write(old.read(MIDDLE))
        new.write(os.urandom(1024))
        shutil.copyfileobj(old, new, 8 * MIB)


def small_tree(tree, n):
    """`n` files of 4 KiB (random) in 50 folders under `tree`; returns how many."""
    for i in range(50):
        os.makedirs(os.path.join(tree, f"dir{i:02}"))
        for j in range(n // 50):
            with open(os.path.join(tree, f"dir{i:02}", f"f{j:03}.dat"), "wb") as f:
                f.write(os.urandom(4096))
    subprocess.run(["sync"], check=True)
    return (n // 50) * 50


def count_files(d):
    n = 0
    for _, _, files in os.walk(d):
        n += sum(1 for f in files if not f.startswith(".syncthing."))
    return n


class Nodes:
    """What both systems share: their processes, stopped the same way."""
    procs = {}
    grace = 10

    def stop(self):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                p.kill()


class Zync(Nodes):
    name = "Zync"

    def __init__(self, work):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "zync-tracker", "-p", "zync-peer"],
                       cwd=ROOT, check=True)
        b = os.path.join(ROOT, "target", "release")
        self.work = work
        key = os.path.join(work, "cluster.key")
        subprocess.run([f"{b}/zync-peer", "keygen", key], check=True, stderr=subprocess.DEVNULL)
        env = dict(os.environ, ZYNC_KEY_FILE=key)
        tracker = f"127.0.0.1:{free_port()}"
        log = lambda n: open(os.path.join(work, f"{n}.log"), "w")
        self.procs = {"tracker": subprocess.Popen([f"{b}/zync-tracker", "--listen", tracker, "--publish", "127.0.0.1:0"],
                                                  stderr=log("tracker"), env=env)}
        self.dirs = []
        for n in ("a", "b", "c"):
            d = os.path.join(work, n)
            os.makedirs(d)
            self.dirs.append(d)
            self.procs[n] = subprocess.Popen([f"{b}/zync-peer", "--tracker", tracker, "run", "--dir", d,
                                              "--listen", "127.0.0.1:0", "--name", n], stderr=log(n), env=env)
        peers = lambda: subprocess.run([f"{b}/zync-peer", "--tracker", tracker, "peers", "--json"],
                                       capture_output=True, text=True, env=env).stdout
        wait(lambda: peers().count('"name"') == 3, 30, "3 Zync peers", 0.05)

    def fetched(self):
        """Bytes B and C received from other peers so far (their synced lines)."""
        total = 0
        for n in ("b", "c"):
            with open(os.path.join(self.work, f"{n}.log")) as f:
                total += sum(int(m) for m in re.findall(r"event=synced .*? fetched=(\d+)", f.read()))
        return total


class Syncthing(Nodes):
    name = "Syncthing"
    grace = 20

    def __init__(self, work):
        self.work = work
        homes, ids, ports, guis, keys = [], [], [], [], []
        for n in ("a", "b", "c"):
            h = os.path.join(work, f"st-{n}")
            subprocess.run(["syncthing", "generate", f"--home={h}", "--no-default-folder"],
                           check=True, capture_output=True)
            ids.append(subprocess.run(["syncthing", f"--home={h}", "--device-id"], check=True,
                                      capture_output=True, text=True).stdout.strip())
            homes.append(h)
            ports.append(free_port())
            guis.append(free_port())
        self.dirs = []
        for i, h in enumerate(homes):
            d = os.path.join(work, "abc"[i])
            os.makedirs(d)
            self.dirs.append(d)
            cfg = os.path.join(h, "config.xml")
            tree = ET.parse(cfg)
            root = tree.getroot()
            gui = root.find("gui")
            gui.find("address").text = f"127.0.0.1:{guis[i]}"
            keys.append(gui.find("apikey").text)
            opts = root.find("options")
            for tag, val in [("listenAddress", f"tcp://127.0.0.1:{ports[i]}"), ("globalAnnounceEnabled", "false"),
                             ("localAnnounceEnabled", "false"), ("relaysEnabled", "false"), ("natEnabled", "false"),
                             ("startBrowser", "false"), ("urAccepted", "-1"), ("crashReportingEnabled", "false"),
                             ("autoUpgradeIntervalH", "0"), ("setLowPriority", "false")]:
                opts.find(tag).text = val
            for old in root.findall("device"):
                root.remove(old)
            for j, dev in enumerate(ids):
                e = ET.SubElement(root, "device", id=dev, name="abc"[j], compression="metadata",
                                  introducer="false", skipIntroductionRemovals="false", introducedBy="")
                ET.SubElement(e, "address").text = f"tcp://127.0.0.1:{ports[j]}"
            folder = ET.SubElement(root, "folder", id="bench", label="bench", path=d, type="sendreceive",
                                   rescanIntervalS="3600", fsWatcherEnabled="true", fsWatcherDelayS="1",
                                   ignorePerms="false", autoNormalize="true")
            for dev in ids:
                ET.SubElement(folder, "device", id=dev, introducedBy="")
            tree.write(cfg)
        self.guis, self.keys = guis, keys
        env = dict(os.environ, STNOUPGRADE="1", STNODEFAULTFOLDER="1")
        self.procs = {}
        for i, h in enumerate(homes):
            self.procs["abc"[i]] = subprocess.Popen(
                ["syncthing", "serve", f"--home={h}", "--no-browser", "--no-restart", "--no-upgrade"],
                stdout=open(os.path.join(work, f"st-{'abc'[i]}.log"), "w"), stderr=subprocess.STDOUT, env=env)
        for i in range(3):
            wait(lambda: self.api(i, "/rest/system/ping") is not None, 60, "Syncthing up", 0.1)

        def connected():
            for i in range(3):
                c = self.api(i, "/rest/system/connections")
                if not c or sum(1 for v in c["connections"].values() if v["connected"]) < 2:
                    return False
            return True
        wait(connected, 60, "Syncthing connected", 0.1)
        wait(lambda: all((self.api(i, "/rest/db/status?folder=bench") or {}).get("state") == "idle"
                         for i in range(3)), 60, "Syncthing idle", 0.1)

    def api(self, i, path):
        import json
        req = urllib.request.Request(f"http://127.0.0.1:{self.guis[i]}{path}", headers={"X-API-Key": self.keys[i]})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.load(r)
        except Exception:
            return None

    def fetched(self):
        total = 0
        for i in (1, 2):
            c = self.api(i, "/rest/system/connections") or {"total": {"inBytesTotal": 0}}
            total += c["total"]["inBytesTotal"]
        return total


def scenarios(sys_, work, args):
    """Runs every scenario once on `sys_`; returns {name: (seconds, bytes fetched)}."""
    a, b, c = sys_.dirs
    out = {}

    def measured(name, act, done, timeout=600, step=0.002):
        f0 = sys_.fetched()
        t = time.monotonic()
        act()
        end = wait(done, timeout, f"{sys_.name}: {name}", step)
        time.sleep(0.3)  # let the counters settle
        out[name] = (end - t, sys_.fetched() - f0)

    if "1k" in args.only:
        # 1 KiB files, one at a time.
        lat = []
        for n in range(args.files):
            body = os.urandom(1024)
            name = f"small-{time.monotonic_ns()}.txt"
            t = time.monotonic()
            with open(os.path.join(a, name), "wb") as f:
                f.write(body)
            end = wait(lambda: all(os.path.exists(os.path.join(d, name)) and os.path.getsize(os.path.join(d, name)) == 1024
                                   and open(os.path.join(d, name), "rb").read() == body for d in (b, c)), 60, name)
            lat.append(end - t)
            time.sleep(0.05)
        out["1 KiB file"] = (statistics.median(lat), None)

    if "256m" in args.only:
        # 1 x 256 MiB, then 1 MiB changed inside it.
        src = os.path.join(work, "big.src")
        random_file(src, 256 * MIB)
        digest = sha(src)
        name = f"big-{time.monotonic_ns()}.bin"
        full = lambda: all(os.path.exists(os.path.join(d, name)) and os.path.getsize(os.path.join(d, name)) == 256 * MIB
                           for d in (b, c))
        measured("1 x 256 MiB", lambda: os.rename(src, os.path.join(a, name)), full)
        wait(lambda: all(sha(os.path.join(d, name)) == digest for d in (b, c)), 120, "256 MiB verified", 0.5)
        inos = {d: os.stat(os.path.join(d, name)).st_ino for d in (b, c)}
        patch = os.urandom(MIB)

        measured("1 MiB in 256 MiB", lambda: overwrite_middle(os.path.join(a, name), patch),
                 lambda: all(os.path.exists(os.path.join(d, name)) and os.stat(os.path.join(d, name)).st_ino != inos[d]
                             and os.path.getsize(os.path.join(d, name)) == 256 * MIB for d in (b, c)))
        want = sha(os.path.join(a, name))
        wait(lambda: all(sha(os.path.join(d, name)) == want for d in (b, c)), 120, "edit verified", 0.5)

        # 1 KiB inserted in the middle, as an editor saves: a new file
        # renamed over the old one. Fixed blocks would lose every block
        # after the insertion.
        inos = {d: os.stat(os.path.join(d, name)).st_ino for d in (b, c)}
        staged = os.path.join(work, "big.insert")
        insert_middle(os.path.join(a, name), staged)
        measured("1 KiB inserted", lambda: os.rename(staged, os.path.join(a, name)),
                 lambda: all(os.path.exists(os.path.join(d, name)) and os.stat(os.path.join(d, name)).st_ino != inos[d]
                             and os.path.getsize(os.path.join(d, name)) == 256 * MIB + 1024 for d in (b, c)))
        want = sha(os.path.join(a, name))
        wait(lambda: all(sha(os.path.join(d, name)) == want for d in (b, c)), 120, "insertion verified", 0.5)
        os.remove(os.path.join(a, name))
        wait(lambda: not any(os.path.exists(os.path.join(d, name)) for d in (b, c)), 120, "256 MiB gone", 0.1)

    if "tree" in args.only:
        # 5,000 x 4 KiB in 50 folders.
        tree = os.path.join(work, f"tree-{time.monotonic_ns()}")
        n = small_tree(tree, args.small)
        dest = os.path.join(a, os.path.basename(tree))
        measured(f"{n:,} x 4 KiB", lambda: os.rename(tree, dest),
                 lambda: all(count_files(os.path.join(d, os.path.basename(tree))) == n
                             if os.path.isdir(os.path.join(d, os.path.basename(tree))) else False for d in (b, c)),
                 # Counting 2 x 5,000 files is work the nodes' CPUs would
                 # otherwise lose to the measurement itself.
                 timeout=900, step=0.02)
        # The tree stays until the end: see `quiet_disk`.

    if "1g" in args.only:
        # 1 x 1 GiB.
        src = os.path.join(work, "huge.src")
        random_file(src, 1024 * MIB)
        subprocess.run(["sync"], check=True)
        name = f"huge-{time.monotonic_ns()}.bin"
        measured("1 x 1 GiB", lambda: os.rename(src, os.path.join(a, name)),
                 lambda: all(os.path.exists(os.path.join(d, name)) and os.path.getsize(os.path.join(d, name)) == 1024 * MIB
                             for d in (b, c)))
        os.remove(os.path.join(a, name))
        wait(lambda: not any(os.path.exists(os.path.join(d, name)) for d in (b, c)), 120, "1 GiB gone", 0.1)
    return out


def quiet_disk(scratch):
    """Removes what an earlier run left in `scratch`, and says what that costs.

    On ext4 without a journal (this VM's disk), an inode freed in the last
    minute (six, while its inode table block is not yet written back) is
    skipped when a new file is created in its block group, at the cost of
    one cache lookup each: creating 5,000 files next to 15,000 just deleted
    took 1.7-3.4 s of system time here, against 0.13 s in a quiet folder.
    Every system creates one inode per file it receives, so a tree deleted
    between runs would slow the next run of every system by more than the
    whole of Zync's work. Nothing is deleted until the last run is over.
    """
    if not os.path.exists(scratch):
        return
    shutil.rmtree(scratch)
    subprocess.run(["sync"], check=True)
    print(f"removed an earlier run's {scratch}; waiting 6 minutes so that its freed inodes do not slow "
          "this run's file creation (see quiet_disk)", file=sys.stderr)
    time.sleep(360)


def floors(work, args):
    """cp + sync, rsync and Unison (one-shot) of the same data, on the same disk:
    {scenario: [(what, seconds)]}."""
    out = {}
    src = os.path.join(work, "floor.src")
    unison = shutil.which("unison")
    uhome = os.path.join(work, "unison-home")
    os.makedirs(uhome, exist_ok=True)

    def timed(cmd):
        t = time.monotonic()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, UNISON=uhome))
        subprocess.run(["sync"], check=True)
        return time.monotonic() - t

    def uni(a, b):
        # Both replicas local, no prompts; -fastcheck is its default on Unix.
        return f"unison {a} {b} -batch -auto -silent -times -confirmbigdel=false -ui text"

    def both(a, b, c):
        # Unison syncs two replicas: A with B, then A with C.
        return f"{uni(a, b)} && {uni(a, c)}"

    def replicas():
        """Three empty Unison replicas, with their archives made; returns them."""
        r = [os.path.join(work, d) for d in ("u0", "u1", "u2")]
        for d in r:
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        timed(both(*r))
        return r

    def unison_new_file(name):
        """Unison's time for `src` new in A as `name`; returns it and the replicas."""
        r = replicas()
        shutil.copyfile(src, f"{r[0]}/{name}")
        subprocess.run(["sync"], check=True)
        return timed(both(*r)), r

    if "256m" in args.only:
        random_file(src, 256 * MIB)
        subprocess.run(["sync"], check=True)
        out["1 x 256 MiB"] = [("cp+sync x2", timed(f"cp {src} {work}/f1 && cp {src} {work}/f2"))]
        overwrite_middle(f"{work}/f1", os.urandom(MIB))
        out["1 MiB in 256 MiB"] = []
        if shutil.which("rsync"):
            out["1 MiB in 256 MiB"].append(
                ("rsync delta", timed(f"rsync --no-whole-file --inplace {work}/f1 {work}/f2")))
            insert_middle(f"{work}/f2", f"{work}/f1")
            out["1 KiB inserted"] = [("rsync delta", timed(f"rsync --no-whole-file {work}/f1 {work}/f2"))]
        if unison:
            # The same three changes, each synced A -> B, A -> C by Unison.
            secs, r = unison_new_file("big")
            out["1 x 256 MiB"].append(("unison x2", secs))
            overwrite_middle(f"{r[0]}/big", os.urandom(MIB))
            out["1 MiB in 256 MiB"].append(("unison x2", timed(both(*r))))
            insert_middle(f"{r[0]}/big", f"{work}/big.insert")
            os.rename(f"{work}/big.insert", f"{r[0]}/big")
            out.setdefault("1 KiB inserted", []).append(("unison x2", timed(both(*r))))
            for d in r:
                shutil.rmtree(d)
    if "tree" in args.only:
        tree = os.path.join(work, "floor-tree")
        n = small_tree(tree, args.small)
        row = out.setdefault(f"{n:,} x 4 KiB", [])
        if shutil.which("rsync"):
            row.append(("rsync x2", timed(f"rsync -a {tree}/ {work}/t1/ && rsync -a {tree}/ {work}/t2/")))
        if unison:
            r = replicas()
            os.rmdir(r[0])
            os.rename(tree, r[0])
            row.append(("unison x2", timed(both(*r))))
    if "1g" in args.only:
        random_file(src, 1024 * MIB)
        subprocess.run(["sync"], check=True)
        out["1 x 1 GiB"] = [("cp+sync x2", timed(f"cp {src} {work}/g1 && cp {src} {work}/g2"))]
        if unison:
            secs, r = unison_new_file("huge")
            out["1 x 1 GiB"].append(("unison x2", secs))
            for d in r:
                shutil.rmtree(d)
    for p in ("f1", "f2", "g1", "g2", "floor.src"):
        if os.path.exists(os.path.join(work, p)):
            os.remove(os.path.join(work, p))
    for p in ("floor-tree", "t1", "t2", "u0", "u1", "u2", "unison-home"):
        shutil.rmtree(os.path.join(work, p), ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per system; each figure is the median (default 3)")
    ap.add_argument("--files", type=int, default=20, help="1 KiB files per run (default 20)")
    ap.add_argument("--small", type=int, default=5000, help="small files in the tree (default 5000)")
    ap.add_argument("--only", default="1k,256m,tree,1g",
                    help="scenarios to run, comma-separated: 1k, 256m (with the 1 MiB edit), tree, 1g "
                         "(default all)")
    ap.add_argument("--no-gib", dest="gib", action="store_false", help="skip the 1 GiB scenario")
    ap.add_argument("--systems", default="zync,syncthing",
                    help="systems to run side by side: zync, syncthing (default both; Syncthing only if on the PATH)")
    ap.add_argument("--scratch", default=os.path.join(ROOT, "target", "bench-vs"), help="scratch folder")
    args = ap.parse_args()
    args.only = [o for o in args.only.split(",") if o and (args.gib or o != "1g")]
    quiet_disk(args.scratch)
    os.makedirs(args.scratch)
    want = args.systems.split(",")
    systems = [Zync] if "zync" in want else []
    if "syncthing" not in want:
        pass
    elif shutil.which("syncthing"):
        systems.append(Syncthing)
    else:
        print("syncthing is not on the PATH (apt-get install syncthing): Zync only", file=sys.stderr)
    results, usage = {}, {}
    for cls in systems:
        work = os.path.join(args.scratch, cls.name.lower())
        os.makedirs(work)
        s = cls(work)
        try:
            cpu0 = {n: tree_cpu_s(p.pid) for n, p in s.procs.items()}
            runs = [scenarios(s, work, args) for _ in range(args.runs)]
            usage[cls.name] = {n: (tree_rss_mb(p.pid), tree_cpu_s(p.pid) - cpu0[n]) for n, p in s.procs.items()}
        finally:
            s.stop()
        results[cls.name] = {k: (statistics.median(r[k][0] for r in runs),
                                 None if runs[0][k][1] is None else statistics.median(r[k][1] for r in runs))
                             for k in runs[0]}
    floor = floors(args.scratch, args)
    names = list(dict.fromkeys([k for r in results.values() for k in r] + list(floor)))
    cols = [c.name for c in systems]
    print(f"\nseconds until B and C hold identical copies, median of {args.runs} runs "
          f"({os.cpu_count()} cores, loopback); MiB fetched by B and C in brackets; "
          f"floors and Unison are one run of a one-shot command\n")
    print(f"{'scenario':<20}" + "".join(f"{c:>22}" for c in cols) + "   floors")
    for k in names:
        row = f"{k:<20}"
        for c in cols:
            secs, fetched = results[c].get(k, (float("nan"), None))
            row += f"{secs:>12.3f}" + (f" [{fetched / MIB:>7.1f}]" if fetched is not None else " " * 10)
        row += "   " + ", ".join(f"{secs:.3f} ({what})" for what, secs in floor.get(k, []))
        print(row)
    print("\npeak RSS (MB) and CPU-seconds over all runs, per process:")
    for c in cols:
        print(f"  {c:<10} " + ", ".join(f"{n} {r:.0f} MB {t:.1f} s" for n, (r, t) in usage[c].items()))
    shutil.rmtree(args.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
