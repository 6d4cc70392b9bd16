#!/usr/bin/env python3
"""A third-party client written from PROTOCOL.md alone (pyzmq + msgpack),
against the real binaries: it follows the tracker's notifications, lists the
cluster's files page by page, and downloads a file block by block from a
peer, checking every block and the whole file against their SHA-256.

Starts zync-tracker and one zync-peer (debug binaries from target/) on free
loopback ports. Run by scripts/test when python3-zmq and python3-msgpack are
installed (.ci/run installs them).
"""
import hashlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq
import zmq.utils.z85

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.join(ROOT, "target", "debug")
VERSION = 2
BLOCK = 262144
TIMEOUT_MS = 10000


def free_port(taken=set()):
    """A free port from below the kernel's ephemeral range."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for port in random.sample(range(10000, low), 2000):
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free port")


class Keys:
    """The cluster's CURVE keys, derived from the key file as PROTOCOL.md
    section 1 says."""

    def __init__(self, path):
        secret = bytes.fromhex(open(path).read().split()[0])

        def pair(label):
            sk = hashlib.blake2b(label, key=secret, digest_size=32).digest()
            pk = zmq.utils.z85.decode(zmq.curve_public(zmq.utils.z85.encode(sk)))
            return pk, sk

        self.server_public, _ = pair(b"zync server v1")
        self.member_public, self.member_secret = pair(b"zync member v1")

    def socket(self, ctx, kind):
        """A client socket holding the member key."""
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.curve_serverkey = self.server_public
        s.curve_publickey = self.member_public
        s.curve_secretkey = self.member_secret
        return s


KEYS = None


def stranger(ctx):
    """A REQ with keys that belong to no cluster of ours."""
    public, secret = zmq.curve_keypair()
    s = ctx.socket(zmq.REQ)
    s.curve_serverkey = zmq.curve_keypair()[0]
    s.curve_publickey, s.curve_secretkey = public, secret
    return s


def pack(msg):
    return msgpack.packb([VERSION, msg])


def unpack(body):
    version, msg = msgpack.unpackb(body)
    assert version == VERSION, f"protocol version {version}"
    return msg


def ask(ctx, endpoint, msg):
    """One request on a fresh REQ socket (section 1: a stuck REQ is thrown away)."""
    s = KEYS.socket(ctx, zmq.REQ)
    s.connect(endpoint)
    try:
        s.send(pack(msg))
        if not s.poll(TIMEOUT_MS):
            raise TimeoutError(f"{endpoint} did not answer {msg!r}")
        return unpack(s.recv())
    finally:
        s.close()


def variant(msg):
    """(name, fields) of an externally tagged enum value (section 2)."""
    if isinstance(msg, str):
        return msg, {}
    (name, fields), = msg.items()
    return name, fields


def list_files(ctx, tracker):
    """The whole cluster index, page by page (section 3, List)."""
    files, after, first_seq = [], None, None
    while True:
        name, page = variant(ask(ctx, tracker, {"List": {"after": after}}))
        assert name == "Snapshot", (name, page)
        if first_seq is None:
            first_seq = (page["epoch"], page["seq"])
        files += page["files"]
        after = page.get("next")
        if after is None:
            return files, first_seq


def spans_of(entry):
    """Each block's (offset, length): from `lengths`, or fixed blocks (section 2)."""
    lengths = entry.get("lengths") or [min(BLOCK, entry["size"] - BLOCK * i) for i in range(len(entry["blocks"]))]
    assert len(lengths) == len(entry["blocks"]) and sum(lengths) == entry["size"], "inconsistent entry"
    offsets = [sum(lengths[:i]) for i in range(len(lengths))]
    return list(zip(offsets, lengths))


def download(ctx, tracker, entry):
    """Locate holders, then GetBlock every block from one, checked (section 5)."""
    name, holders = variant(ask(ctx, tracker, {"Locate": {"path": entry["path"], "sha256": entry["sha256"]}}))
    assert name == "Holders" and holders["holders"], (name, holders)
    endpoint = holders["holders"][0]["endpoint"].split(",")[0]
    s = KEYS.socket(ctx, zmq.DEALER)
    s.connect(endpoint)
    blocks, spans = entry["blocks"], spans_of(entry)
    for i, (offset, length) in enumerate(spans):  # all requests in flight at once
        s.send_multipart([b"", pack({"GetBlock": {"id": i + 1, "path": entry["path"], "sha256": entry["sha256"],
                                                  "index": i, "offset": offset, "len": length}})])
    got = {}
    while len(got) < len(blocks):
        assert s.poll(TIMEOUT_MS), "holder went silent"
        name, reply = variant(unpack(s.recv_multipart()[-1]))
        assert name == "Block", (name, reply)
        i, data = reply["index"], reply["data"]
        want_len = spans[i][1]
        assert len(data) == want_len, f"block {i}: {len(data)} bytes, want {want_len}"
        assert hashlib.sha256(data).digest() == blocks[i], f"block {i} fails its hash"
        assert reply["id"] == i + 1
        got[i] = data
    s.close()
    content = b"".join(got[i] for i in range(len(blocks)))
    assert hashlib.sha256(content).digest() == entry["sha256"], "whole file fails its hash"
    return content


def main():
    global KEYS
    subprocess.run(["cargo", "build", "-q", "-p", "zync-tracker", "-p", "zync-peer"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="zync-protocol-")
    key_file = os.path.join(tmp, "cluster.key")
    subprocess.run([f"{BIN}/zync-peer", "keygen", key_file], check=True, stderr=subprocess.DEVNULL)
    KEYS = Keys(key_file)
    os.environ["ZYNC_KEY_FILE"] = key_file
    tracker_port, publish_port = free_port(), free_port()
    tracker = f"tcp://127.0.0.1:{tracker_port}"
    procs = []
    log = lambda n: open(os.path.join(tmp, f"{n}.log"), "w")
    ctx = zmq.Context()
    try:
        procs.append(subprocess.Popen([f"{BIN}/zync-tracker", "--listen", f"127.0.0.1:{tracker_port}",
                                       "--publish", f"127.0.0.1:{publish_port}"], stderr=log("tracker")))
        # Subscribe before anything happens (section 4, step 1).
        sub = KEYS.socket(ctx, zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{publish_port}")

        folder = os.path.join(tmp, "p1")
        os.makedirs(folder)
        procs.append(subprocess.Popen([f"{BIN}/zync-peer", "--tracker", f"127.0.0.1:{tracker_port}", "run",
                                       "--dir", folder, "--listen", f"127.0.0.1:{free_port()}", "--name", "p1"],
                                      stderr=log("p1")))
        # Three blocks and a bit of random bytes: content-defined chunks,
        # whose lengths the entry carries.
        content = os.urandom(3 * BLOCK + 1234)
        time.sleep(0.5)
        with open(os.path.join(folder, "docs-a.bin"), "wb") as f:
            f.write(content)

        # Follow notifications until the file is announced (FileChanged).
        announced, seqs, end = None, [], time.monotonic() + 30
        while announced is None:
            assert time.monotonic() < end, "no FileChanged for docs-a.bin"
            if not sub.poll(1000):
                continue
            note = unpack(sub.recv())
            seqs.append((note["epoch"], note["seq"]))
            name, ev = variant(note["event"])
            if name == "FileChanged" and ev["file"]["entry"]["path"] == "docs-a.bin":
                announced = ev["file"]
        assert all(a[0] == b[0] and a[1] <= b[1] for a, b in zip(seqs, seqs[1:])), seqs
        assert announced["holders"] == ["p1"], announced

        files, (epoch, seq) = list_files(ctx, tracker)
        entry = next(f["entry"] for f in files if f["entry"]["path"] == "docs-a.bin")
        assert entry["sha256"] == hashlib.sha256(content).digest()
        assert entry["size"] == len(content) and entry["blocks"]
        assert sum(entry["lengths"]) == len(content), entry["lengths"]
        assert epoch == seqs[-1][0] and seq >= seqs[-1][1]

        name, peers = variant(ask(ctx, tracker, "Peers"))
        assert name == "Peers" and [p["name"] for p in peers["peers"]] == ["p1"], peers

        assert download(ctx, tracker, entry) == content
        name, err = variant(ask(ctx, tracker, {"Heartbeat": {"name": "nobody", "device": 1}}))
        assert name == "Error" and err["kind"] == "UnknownPeer", (name, err)
        # Without the key, or with another cluster's, nothing answers.
        for who, s in (("plaintext", ctx.socket(zmq.REQ)), ("another cluster's key", stranger(ctx))):
            s.setsockopt(zmq.LINGER, 0)
            s.connect(tracker)
            s.send(pack("Peers"))
            assert not s.poll(1500), f"the tracker answered a client with {who}"
            s.close()
        print(f"protocol client: listed {len(files)} file(s), followed {len(seqs)} notification(s), "
              f"downloaded {len(content)} bytes in {len(entry['blocks'])} verified blocks")
    except BaseException:
        for n in ("tracker", "p1"):
            p = os.path.join(tmp, f"{n}.log")
            if os.path.exists(p):
                print(f"==== {n}\n" + open(p).read(), file=sys.stderr)
        raise
    finally:
        for p in procs:
            p.kill()
            p.wait()
        ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
