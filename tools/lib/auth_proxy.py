#!/usr/bin/env python3
"""A loopback HTTP proxy that adds `Authorization: Bearer $CODEB_PROXY_KEY`
to every request and forwards it, everything else unchanged (Host and Origin
included), to 127.0.0.1:UPSTREAM. For clients that cannot send a header,
such as the MCP conformance suite (tools/conformance). Responses stream
through as they arrive (SSE included); each response ends by closing the
connection. The key comes from the environment, never from argv.

Usage: CODEB_PROXY_KEY=... auth_proxy.py LISTEN_PORT UPSTREAM_PORT
Prints "listening" once it accepts connections.
"""

import http.client
import http.server
import os
import sys

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


def main():
    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    key = os.environ.get("CODEB_PROXY_KEY", "")
    if not key:
        sys.exit("auth_proxy: CODEB_PROXY_KEY is empty")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"authorization"}}
            headers["Authorization"] = f"Bearer {key}"
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=120)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                conn.close()
                self.close_connection = True

        do_GET = do_POST = do_DELETE = forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", listen), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
