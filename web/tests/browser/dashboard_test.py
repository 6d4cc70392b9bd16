#!/usr/bin/env python3
"""A real browser against the real cluster.

Starts zync-tracker, two zync-peers and zync-web (debug binaries from
target/) and opens the dashboard in headless Chromium (Debian's chromium
and chromium-driver, driven by Selenium). It logs in through the login
form (a wrong password first), checks that the dashboard shows the live
peers in sync and the cluster's files, browses into a folder by its link
and back by the breadcrumbs, searches, uploads a file through the upload
form (it reaches the peer's folder byte for byte), makes a conflict with
the SIGSTOP trick, sees both versions and their diff on the page, keeps
the conflict copy with one click (every peer ends with that content and
no copy), restores a deleted file from the kept versions (it comes back
on every peer), and logs out. Saves screenshots to target/browser/: the
dashboard (dashboard.png), the conflict view (conflict.png), and a phone
width (phone.png, checked for horizontal scrolling).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.join(ROOT, "target", "debug")


_taken = set()


def free_port():
    """A free port from below the kernel's ephemeral range: one from bind(0)
    can be taken by any outgoing connection before our server binds it."""
    import random
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for port in random.sample(range(10000, low), 2000):
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free port")


def can_connect(port):
    """True once something accepts on the port (a refused try is not an error)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait(cond, what, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def main():
    subprocess.run(["cargo", "build", "-q", "-p", "zync-tracker", "-p", "zync-peer", "-p", "zync-web"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="zync-browser-")
    # One cluster key for every process started here.
    key = os.path.join(tmp, "cluster.key")
    subprocess.run([f"{BIN}/zync-peer", "keygen", key], check=True, stderr=subprocess.DEVNULL)
    os.environ["ZYNC_KEY_FILE"] = key
    # The web login's password, as an operator would keep it.
    password = "browser test password ✓"
    pw_file = os.path.join(tmp, "web.password")
    with open(pw_file, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    os.chmod(pw_file, 0o600)
    tracker = f"127.0.0.1:{free_port()}"
    web_port = free_port()
    procs = []
    log = lambda n: open(os.path.join(tmp, f"{n}.log"), "w")
    try:
        procs.append(subprocess.Popen([f"{BIN}/zync-tracker", "--listen", tracker, "--publish", "127.0.0.1:0"], stderr=log("tracker")))
        peer_dir = os.path.join(tmp, "peer1")
        os.makedirs(peer_dir)
        with open(os.path.join(peer_dir, "already-there.txt"), "w") as f:
            f.write("hello from peer1\n")
        os.makedirs(os.path.join(peer_dir, "reports", "2026"))
        for name in ("q1 summary.txt", "q2 summary.txt", "budget.csv"):
            with open(os.path.join(peer_dir, "reports", "2026", name), "w") as f:
                f.write(f"{name}\n")
        procs.append(subprocess.Popen([f"{BIN}/zync-peer", "--tracker", tracker, "run", "--dir", peer_dir,
                                       "--listen", "127.0.0.1:0", "--name", "peer1"], stderr=log("peer1")))
        peer2_dir = os.path.join(tmp, "peer2")
        os.makedirs(peer2_dir)
        peer2 = subprocess.Popen([f"{BIN}/zync-peer", "--tracker", tracker, "run", "--dir", peer2_dir,
                                  "--listen", "127.0.0.1:0", "--name", "peer2"], stderr=log("peer2"))
        procs.append(peer2)
        procs.append(subprocess.Popen([f"{BIN}/zync-web", "--tracker", tracker, "--listen", f"127.0.0.1:{web_port}",
                                       "--data", os.path.join(tmp, "web"), "--peer-listen", "127.0.0.1:0",
                                       "--password-file", pw_file], stderr=log("web")))

        opts = webdriver.ChromeOptions()
        for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"]:
            opts.add_argument(a)
        opts.binary_location = "/usr/bin/chromium"
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            url = f"http://127.0.0.1:{web_port}/"
            wait(lambda: can_connect(web_port), "zync-web up")
            driver.get(url)
            w = WebDriverWait(driver, 30)
            # The dashboard is behind the login: a wrong password is told
            # so, the right one opens it.
            w.until(EC.presence_of_element_located((By.ID, "password")))
            assert not driver.find_elements(By.ID, "peers"), "the dashboard showed before the login"
            driver.find_element(By.ID, "password").send_keys("not it")
            driver.find_element(By.ID, "login").click()
            w.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".error"), "Wrong password"))
            driver.find_element(By.ID, "password").send_keys(password)
            driver.find_element(By.ID, "login").click()
            w.until(EC.presence_of_element_located((By.ID, "peers")))
            cookie = driver.get_cookie("zync_session")
            assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
            w.until(EC.text_to_be_present_in_element((By.ID, "peers"), "peer1"))
            w.until(EC.text_to_be_present_in_element((By.ID, "peers"), "web"))
            w.until(EC.text_to_be_present_in_element((By.ID, "peers"), "peer2"))
            w.until(EC.text_to_be_present_in_element((By.ID, "files"), "already-there.txt"))
            link = driver.find_element(By.LINK_TEXT, "already-there.txt")
            assert link.get_attribute("href").endswith("/files/already-there.txt"), link.get_attribute("href")
            # Every peer comes to hold everything: the summary says so.
            w.until(EC.text_to_be_present_in_element((By.ID, "summary"), "In sync"))
            shots = os.path.join(ROOT, "target", "browser")
            os.makedirs(shots, exist_ok=True)

            # Browse into a folder by its link, deeper, and back by the breadcrumbs.
            driver.find_element(By.PARTIAL_LINK_TEXT, "reports/").click()
            w.until(EC.text_to_be_present_in_element((By.ID, "crumbs"), "reports"))
            driver.find_element(By.PARTIAL_LINK_TEXT, "2026/").click()
            w.until(EC.text_to_be_present_in_element((By.ID, "files"), "budget.csv"))
            assert "already-there.txt" not in driver.find_element(By.ID, "files").text
            assert "#dir=reports%2F2026" in driver.current_url, driver.current_url
            driver.find_element(By.CSS_SELECTOR, '#crumbs a[data-dir="reports"]').click()
            w.until(EC.text_to_be_present_in_element((By.ID, "files"), "2026/"))
            # Search (server-side), from this folder down.
            driver.find_element(By.ID, "search").send_keys("SUMMARY")
            driver.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
            w.until(EC.text_to_be_present_in_element((By.ID, "range"), "2 files found"))
            found = driver.find_element(By.ID, "files").text
            assert "q1 summary.txt" in found and "budget.csv" not in found, found
            driver.find_element(By.CSS_SELECTOR, '#crumbs a[data-dir=""]').click()
            w.until(EC.text_to_be_present_in_element((By.ID, "files"), "already-there.txt"))

            upload = os.path.join(tmp, "from the browser ✓.txt")
            body = b"uploaded through the dashboard form\n" * 100
            with open(upload, "wb") as f:
                f.write(body)
            driver.find_element(By.ID, "upload-path").send_keys("browser")
            driver.find_element(By.ID, "upload-file").send_keys(upload)
            driver.find_element(By.CSS_SELECTOR, "#upload button").click()
            w.until(EC.text_to_be_present_in_element((By.ID, "upload-status"), "uploaded"))

            target = os.path.join(peer_dir, "browser", "from the browser ✓.txt")
            wait(lambda: os.path.exists(target) and open(target, "rb").read() == body, "upload in peer1's folder")
            w.until(EC.text_to_be_present_in_element((By.ID, "files"), "browser/"))
            w.until(EC.text_to_be_present_in_element((By.ID, "feed"), "from the browser"))
            driver.save_screenshot(os.path.join(shots, "dashboard.png"))

            # A conflict: peer2 stopped while both peers edit notes.txt.
            def write(d, text):
                with open(os.path.join(d, "notes.txt"), "w") as f:
                    f.write(text)
            base = "shopping list\nmilk\neggs\nbread\n"
            write(peer_dir, base)
            for d in (peer_dir, peer2_dir):
                wait(lambda d=d: os.path.exists(os.path.join(d, "notes.txt")) and open(os.path.join(d, "notes.txt")).read() == base, "notes.txt everywhere")
            peer2.send_signal(signal.SIGSTOP)
            theirs = "shopping list\nmilk\noat milk (peer2)\nbread\n"
            write(peer2_dir, theirs)
            time.sleep(0.1)
            write(peer_dir, "shopping list\nmilk\neggs (peer1)\nbread\n")
            time.sleep(0.6)
            peer2.send_signal(signal.SIGCONT)
            w.until(EC.visibility_of_element_located((By.ID, "conflicts-section")))
            w.until(EC.text_to_be_present_in_element((By.ID, "conflicts"), "notes.txt"))
            w.until(EC.visibility_of_element_located((By.ID, "diff-0")))
            diff = driver.find_element(By.ID, "diff-0").text
            assert "− eggs (peer1)" in diff or "− oat milk (peer2)" in diff, diff
            w.until(EC.text_to_be_present_in_element((By.ID, "summary"), "1 conflict"))
            section = driver.find_element(By.ID, "conflicts-section")
            driver.execute_script("arguments[0].scrollIntoView()", section)
            section.screenshot(os.path.join(shots, "conflict.png"))
            # Keep the conflict copy: every peer ends with its content.
            copy_path = driver.find_element(By.CSS_SELECTOR, "#conflicts article").get_attribute("data-copy")
            with open(os.path.join(peer_dir, copy_path)) as f:
                chosen = f.read()
            driver.find_element(By.ID, "keep-copy-0").click()
            w.until(EC.text_to_be_present_in_element((By.ID, "keep-status-0"), "kept the conflict copy"))
            for d in (peer_dir, peer2_dir, os.path.join(tmp, "web")):
                wait(lambda d=d: open(os.path.join(d, "notes.txt")).read() == chosen
                     and not os.path.exists(os.path.join(d, copy_path)), f"the chosen version in {d}")
            w.until(EC.invisibility_of_element_located((By.ID, "conflicts-section")))

            # A deleted file is among the kept versions; Restore brings it back everywhere.
            gone = os.path.join(peer_dir, "already-there.txt")
            os.remove(gone)
            w.until(EC.text_to_be_present_in_element((By.ID, "kept"), "already-there.txt"))
            row = driver.find_element(By.XPATH, "//tbody[@id='kept']/tr[contains(., 'already-there.txt')]")
            row.find_element(By.TAG_NAME, "button").click()
            w.until(EC.text_to_be_present_in_element((By.ID, "kept-status"), "restored already-there.txt"))
            for d in (peer_dir, peer2_dir):
                wait(lambda d=d: os.path.exists(os.path.join(d, "already-there.txt"))
                     and open(os.path.join(d, "already-there.txt")).read() == "hello from peer1\n", f"the restored file in {d}")

            # How a download under way is drawn (the API side is tested with
            # a real stalled download in peer/tests/cli.rs): one /api/status
            # answer with a transfer, rendered by the page's own code.
            driver.execute_script("""
                window.realFetch = window.fetch;
                const moving = {files: 1, bytes: 100, conflicts: 0, unavailable: 0, peers: [{
                    name: "peerX", in_sync: false, files_needed: 1, bytes_needed: 100, files_held: 0,
                    bytes_held: 0, complete_percent: 0,
                    transfers: [{path: "big.iso", size: 100, done: 40, rate_bytes_per_s: 10, eta_s: 6}],
                    failing: 1, errors: [{path: "<b>odd</b>.txt", error: "disk full"}]}]};
                window.fetch = (url, o) => url === "/api/status"
                    ? Promise.resolve(new Response(JSON.stringify(moving), {status: 200}))
                    : window.realFetch(url, o);
                status();
            """)
            w.until(EC.text_to_be_present_in_element((By.ID, "peers"), "big.iso"))
            bar = driver.find_element(By.CSS_SELECTOR, ".transfer [role=progressbar]")
            assert bar.get_attribute("aria-valuenow") == "40", bar.get_attribute("aria-valuenow")
            peers_text = driver.find_element(By.ID, "peers").text
            assert "about 6 s left" in peers_text, peers_text
            assert "1 download failing" in peers_text and "<b>odd</b>.txt: disk full" in peers_text, peers_text
            driver.execute_script("window.fetch = window.realFetch; status();")
            w.until(EC.text_to_be_present_in_element((By.ID, "peers"), "peer2"))

            # A phone's width: nothing scrolls sideways.
            driver.set_window_size(390, 844)
            time.sleep(0.5)
            wide = driver.execute_script("return document.documentElement.scrollWidth")
            assert wide <= 390, f"the page is {wide}px wide on a 390px screen"
            driver.save_screenshot(os.path.join(shots, "phone.png"))
            driver.set_window_size(1280, 900)
            shot = os.path.join(shots, "dashboard.png")
            # Logging out ends the session: the dashboard asks again.
            driver.find_element(By.CSS_SELECTOR, "#logout button").click()
            w.until(EC.presence_of_element_located((By.ID, "password")))
            driver.get(url)
            w.until(EC.presence_of_element_located((By.ID, "password")))

            print(f"browser test passed; screenshot: {shot}")
        finally:
            driver.quit()
    except Exception:
        for n in ("tracker", "peer1", "peer2", "web"):
            print(f"---- {n}.log", file=sys.stderr)
            print(open(os.path.join(tmp, f"{n}.log")).read()[-3000:], file=sys.stderr)
        print(f"the cluster's folders and whole logs are kept in {tmp}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
