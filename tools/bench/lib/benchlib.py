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


# ---------------------------------------------------------------------------
# codeb over HTTP (tools/bench/deploy, tools/bench/switch)

import http.client  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import urllib.request  # noqa: E402

STATELESS = "2026-07-28"


# Every /mcp request needs an API key (DESIGN §6). Benches mint an owner key
# for the run and raise the per-key rate limit (default 100 requests a
# minute) far above what they send; the limiter still runs on every request.
BENCH_RATE_LIMIT_PER_MINUTE = 1_000_000_000


def bench_env(log_level="warn"):
    env = dict(os.environ, CODEB_LOG=log_level,
               CODEB_AUTH__RATE_LIMIT_PER_MINUTE=str(BENCH_RATE_LIMIT_PER_MINUTE))
    env.pop("CODEB_CONFIG", None)
    return env


def mint_key(binary, config, label="bench"):
    """A fresh owner key of team `default` (printed once by `codeb key create`)."""
    r = subprocess.run([binary, "--config", config, "key", "create", "--team", "default",
                        "--role", "owner", "--label", label],
                       env=bench_env(), capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not r.stdout.strip().startswith("codeb_"):
        raise RuntimeError(f"codeb key create failed (exit {r.returncode}): {r.stderr.strip()[:500]}")
    return r.stdout.strip()


class CodebHttp:
    """`codeb --config CONFIG serve --http 127.0.0.1:0`, port taken from its
    `serving MCP at` line; stderr is drained into a short tail for errors.
    `key` is an owner API key minted for this server."""

    def __init__(self, binary, config, log_level="warn", start_timeout=120):
        self.key = mint_key(binary, config)
        env = bench_env(log_level)
        self.proc = subprocess.Popen(
            [binary, "--config", config, "serve", "--http", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        self.port = None
        pat = re.compile(rb"serving MCP at http://127\.0\.0\.1:(\d+)/mcp")
        fd = self.proc.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + start_timeout
        while self.port is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.stop()
                raise RuntimeError(f"codeb did not start listening within {start_timeout} s: "
                                   f"{buf.decode(errors='replace')[-2000:]}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"codeb exited ({self.proc.wait()}) before listening: "
                                   f"{buf.decode(errors='replace')[-2000:]}")
            buf += chunk
            m = pat.search(buf)
            if m:
                self.port = int(m.group(1))
        self.tail = buf.splitlines(keepends=True)[-50:]
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.tail = (self.tail + [line])[-50:]

    def stderr_tail(self):
        return b"".join(self.tail).decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ToolError(RuntimeError):
    """A tool answered with isError (or a JSON-RPC error)."""


class McpStateless:
    """MCP 2026-07-28 stateless HTTP client on one keep-alive connection: no
    initialize, no session; every request carries the protocol headers and
    `_meta`, and the answer is plain JSON."""

    def __init__(self, port, key, timeout=600):
        self.port = port
        self.key = key
        self.timeout = timeout
        self.conn = None
        self.next_id = 0
        self.last_sent = None  # perf_counter() when the last request was sent

    def _connect(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def call_tool(self, name, arguments):
        """Calls a tool; returns (structuredContent, milliseconds from sending
        the request to having read the whole response; the send moment is
        left in self.last_sent). Raises ToolError on isError or a JSON-RPC
        error."""
        self.next_id += 1
        rid = self.next_id
        body = json.dumps({
            "jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {
                "name": name, "arguments": arguments,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": STATELESS,
                    "io.modelcontextprotocol/clientInfo": {"name": "codeb-bench", "version": "1"},
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        }).encode()
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Mcp-Protocol-Version": STATELESS,
            "Mcp-Method": "tools/call",
            "Mcp-Name": name,
        }
        if self.conn is None:
            self._connect()
        t0 = self.last_sent = time.perf_counter()
        try:
            self.conn.request("POST", "/mcp", body=body, headers=headers)
            r = self.conn.getresponse()
            raw = r.read()
        except (http.client.HTTPException, OSError):
            # A keep-alive connection the server closed: one fresh attempt
            # (clock restarted so the figure covers one request only).
            self.conn.close()
            self._connect()
            t0 = self.last_sent = time.perf_counter()
            self.conn.request("POST", "/mcp", body=body, headers=headers)
            r = self.conn.getresponse()
            raw = r.read()
        ms = (time.perf_counter() - t0) * 1000.0
        text = raw.decode(errors="replace")
        if r.status != 200:
            raise RuntimeError(f"{name}: HTTP {r.status}: {text[:500]}")
        msg = _reply(text, rid, name)
        if "error" in msg:
            raise ToolError(f"{name}: JSON-RPC error {msg['error']}")
        res = msg.get("result") or {}
        if res.get("isError"):
            texts = " ".join(c.get("text", "") for c in res.get("content", []) if isinstance(c, dict))
            raise ToolError(f"{name}: {texts[:1500] or json.dumps(res)[:1500]}")
        sc = res.get("structuredContent")
        if sc is None:
            raise RuntimeError(f"{name}: no structuredContent in {text[:500]}")
        return sc, ms

    def close(self):
        if self.conn is not None:
            self.conn.close()


def _reply(body, want_id, what):
    """The JSON-RPC message with id want_id from a JSON or SSE body."""
    candidates = [body] if body.lstrip().startswith("{") else []
    candidates += [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    for c in candidates:
        if c:
            msg = json.loads(c)
            if msg.get("id") == want_id:
                return msg
    raise RuntimeError(f"{what}: no reply with id {want_id} in {body[:500]!r}")


def unique_project(prefix="bench"):
    """A fresh project name: prefix, '-', 8 random lowercase hex digits."""
    return f"{prefix}-{secrets.token_hex(4)}"


def image(st, tag):
    """The testbed registry's demo image with tag (v1, v2)."""
    return f"{st['registry']}/demo:{tag}"


def app_server(config):
    """The [[servers]] entry with the app role of a parsed codeb.toml."""
    app = next((s for s in config.get("servers", []) if "app" in s.get("roles", [])), None)
    if app is None:
        raise RuntimeError("no server with the app role in the config")
    return app


class SshMaster:
    """An OpenSSH ControlMaster to one [[servers]] entry; run() times one
    command through it (each run spawns an ssh client)."""

    def __init__(self, server):
        self.tmp = tempfile.mkdtemp(prefix="codeb-bench-ssh.")
        ctl = os.path.join(self.tmp, "ctl")
        self.base = ["ssh", "-F", "/dev/null", "-p", str(server.get("ssh_port", 22)), "-o", "BatchMode=yes",
                     "-o", "StrictHostKeyChecking=yes", "-o", f"ControlPath={ctl}"]
        if server.get("ssh_key_file"):
            self.base += ["-i", server["ssh_key_file"]]
        if server.get("known_hosts_file"):
            self.base += ["-o", f"UserKnownHostsFile={server['known_hosts_file']}"]
        self.dest = f"{server.get('ssh_user', 'root')}@{server['address']}"
        r = subprocess.run(self.base + ["-o", "ControlMaster=yes", "-o", "ConnectTimeout=5", "-fN", self.dest],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise RuntimeError(f"ssh master to {self.dest}: {r.stderr.strip()[:300]}")

    def run(self, argv, timeout=120):
        """(exit status, stdout, stderr, milliseconds)."""
        t0 = time.perf_counter()
        r = subprocess.run(self.base + ["-o", "ControlMaster=no", self.dest] + list(argv),
                           capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr, (time.perf_counter() - t0) * 1000.0

    def forward(self, remote_host, remote_port):
        """Forwards a free local port to remote_host:remote_port as seen from
        the server (e.g. its loopback); returns the local port. (ssh -L takes
        no port 0: a free port is picked first, then handed to ssh.)"""
        import socket
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            local = sk.getsockname()[1]
        r = subprocess.run(self.base + ["-O", "forward", "-L", f"127.0.0.1:{local}:{remote_host}:{remote_port}",
                                        self.dest], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ssh -O forward: exit {r.returncode}: {r.stderr.strip()[:300]}")
        return local

    def close(self):
        subprocess.run(self.base + ["-O", "exit", self.dest], capture_output=True, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_project(st, config, project):
    """Removes every trace of a benchmark project, best effort (codeb has no
    project delete yet): its containers on the app host (by the
    codeb.project label), its SRV routes in the route zone, and its
    database rows (DELETE FROM projects cascades to environments, slots,
    deployments and their steps). Returns a list of problems, empty when
    all went well."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{2,31}", project):
        raise ValueError(f"not a project name: {project!r}")
    problems = []
    try:
        ssh = SshMaster(app_server(config))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        ssh = None
        problems.append(f"ssh to the app host: {e}")
    if ssh is not None:
        try:
            # 1. Containers (ssh hands the remote shell one command line).
            try:
                rc, _, err, _ = ssh.run([f"podman ps -aq --filter label=codeb.project={project}"
                                         f" | xargs -r podman rm -f -t 0 >/dev/null"])
                if rc != 0:
                    problems.append(f"podman rm: exit {rc}: {err.strip()[:200]}")
            except (OSError, subprocess.SubprocessError) as e:
                problems.append(f"containers: {e}")
            # 2. Routes: the SRV rrsets in the route zone for the project's
            # host names (`_http._tcp.{project}.` production,
            # `_http._tcp.{project}-...` other environments and previews).
            # PowerDNS's API listens on the app host's loopback: reach it
            # through a port forwarded over the master, as codeb does.
            try:
                routing = config.get("routing", {})
                pdns = config.get("pdns", {})
                zone = routing.get("route_zone", "").rstrip(".") + "."
                m = re.match(r"https?://([^/:]+):(\d+)", pdns["api_url"])
                if not m:
                    raise ValueError(f"pdns.api_url {pdns['api_url']!r} has no host:port")
                local = ssh.forward(m.group(1), int(m.group(2)))
                with open(pdns["api_key_file"]) as f:
                    key = f.read().strip()
                url = f"http://127.0.0.1:{local}/api/v1/servers/{pdns.get('server_id', 'localhost')}/zones/{zone}"
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(urllib.request.Request(url, headers={"X-API-Key": key}), timeout=30) as r:
                    doc = json.load(r)
                mine = [rr["name"] for rr in doc.get("rrsets", [])
                        if rr.get("type") == "SRV"
                        and re.match(rf"_http\._tcp\.{re.escape(project)}[.-]", rr.get("name", ""))]
                if mine:
                    body = json.dumps({"rrsets": [{"name": n, "type": "SRV", "changetype": "DELETE"}
                                                  for n in mine]}).encode()
                    req = urllib.request.Request(url, data=body, method="PATCH",
                                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
                    with opener.open(req, timeout=30) as r:
                        r.read()
            except (KeyError, OSError, ValueError, RuntimeError, subprocess.SubprocessError) as e:
                problems.append(f"routes: {e}")
        finally:
            ssh.close()
    # 3. Database rows.
    try:
        with open(st["database_password_file"]) as f:
            env = dict(os.environ, PGPASSWORD=f.read().strip(), PGCONNECT_TIMEOUT="10")
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", st["database_url"], "-c",
                            f"DELETE FROM projects WHERE name = '{project}'"],
                           env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            problems.append(f"psql: {r.stderr.strip()[:200]}")
    except (KeyError, OSError, subprocess.SubprocessError) as e:
        problems.append(f"database: {e}")
    return problems


def fmt_ms(x):
    return "-" if x is None or x != x else f"{x:.0f}"


def srv_query(sock, server, name, timeout=1.0):
    """One DNS SRV query (UDP, no recursion wanted) for name to server
    (host, port) on a bound UDP socket; returns [(priority, weight, port,
    target)] of the answer section, [] for NXDOMAIN or no data. Raises
    OSError (timeout included) or ValueError on a malformed answer."""
    import struct
    qid = secrets.randbits(16)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    sock.settimeout(timeout)
    sock.sendto(struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + qname + struct.pack("!HH", 33, 1), server)
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        data, _ = sock.recvfrom(4096)
        if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
            break
    _, flags, qd, an, _, _ = struct.unpack("!HHHHHH", data[:12])
    if flags & 0x000F not in (0, 3):
        raise ValueError(f"DNS rcode {flags & 0x000F} for {name}")

    def skip_name(i):
        while True:
            n = data[i]
            if n == 0:
                return i + 1
            if n & 0xC0 == 0xC0:
                return i + 2
            i += 1 + n

    def read_name(i):
        parts, hops = [], 0
        while True:
            n = data[i]
            if n == 0:
                return ".".join(parts)
            if n & 0xC0 == 0xC0:
                hops += 1
                if hops > 20:
                    raise ValueError("DNS name pointer loop")
                i = ((n & 0x3F) << 8) | data[i + 1]
                continue
            parts.append(data[i + 1:i + 1 + n].decode(errors="replace"))
            i += 1 + n

    i = 12
    for _ in range(qd):
        i = skip_name(i) + 4
    out = []
    for _ in range(an):
        i = skip_name(i)
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[i:i + 10])
        i += 10
        if rtype == 33:
            prio, weight, port = struct.unpack("!HHH", data[i:i + 6])
            out.append((prio, weight, port, read_name(i + 6)))
        i += rdlen
    return out
