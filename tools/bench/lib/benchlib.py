"""Shared helpers of tools/bench/*: build codeb, find the local testbed,
summarise samples. Standard library only."""

import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or "/var/tmp/codeb-target"


def build(skip=False):
    """Builds the release binary (incremental) and returns its path."""
    binary = os.path.join(target_dir(), "release", "codeb")
    if skip and os.access(binary, os.X_OK):
        return binary
    log("cargo build --release")
    env = dict(os.environ, CARGO_TARGET_DIR=target_dir())
    r = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, env=env)
    if r.returncode != 0 or not os.access(binary, os.X_OK):
        raise RuntimeError(f"cargo build --release failed (exit {r.returncode})")
    return binary


def _status():
    out = subprocess.run(
        [os.path.join(ROOT, "tools", "testbed"), "status", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"tools/testbed status --json: exit {out.returncode}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def testbed(need_up=True, attempts=3):
    """The testbed's status JSON. Brings it up (`tools/testbed up`) when it
    is down or has no config yet, retrying a few times: the testbed may be
    briefly down while it is being restarted."""
    last = None
    for i in range(attempts):
        try:
            st = _status()
            ready = os.path.exists(st.get("config", "")) and (st.get("up") or not need_up)
            if ready:
                return st
            log("testbed is down: tools/testbed up")
            r = subprocess.run([os.path.join(ROOT, "tools", "testbed"), "up"], cwd=ROOT,
                               stdout=sys.stderr, timeout=900)
            st = _status()
            if os.path.exists(st.get("config", "")) and (st.get("up") or not need_up):
                return st
            last = f"tools/testbed up exited {r.returncode}, status up={st.get('up')}"
        except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as e:
            last = str(e)
        if i + 1 < attempts:
            log(f"testbed not ready ({last}); retrying in 10 s")
            time.sleep(10)
    raise RuntimeError(f"testbed not ready: {last}")


def percentile(sorted_xs, p):
    """Nearest-rank percentile of an already sorted list, p in [0, 100]."""
    if not sorted_xs:
        return float("nan")
    k = max(1, math.ceil(p / 100.0 * len(sorted_xs)))
    return sorted_xs[min(k, len(sorted_xs)) - 1]


def stats(xs):
    s = sorted(xs)
    return {
        "n": len(s),
        "min": s[0],
        "median": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "max": s[-1],
    }


def rss_kib(pid):
    """VmRSS of pid in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
