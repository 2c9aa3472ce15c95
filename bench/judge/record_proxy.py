"""A pass-through HTTP proxy that appends every POST body it forwards to a JSONL log.

usage: record_proxy.py UPSTREAM_BASE PORT LOGFILE   (e.g. http://127.0.0.1:8089 18089 log.jsonl)
Used by the judge acceptance to see exactly which requests a run sent.
"""
import http.server
import json
import sys
import threading
import urllib.error
import urllib.request

UPSTREAM, PORT, LOG = sys.argv[1].rstrip("/"), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self, body):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        req = urllib.request.Request(UPSTREAM + self.path, data=body, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                status, data, ctype = r.status, r.read(), r.headers.get("content-type", "application/json")
        except urllib.error.HTTPError as e:
            status, data, ctype = e.code, e.read(), "application/json"
        try:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed (the acceptance does that on purpose)

    def do_GET(self):
        self.forward(None)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with lock, open(LOG, "a") as f:
            f.write(json.dumps({"path": self.path, "body": json.loads(body)}) + "\n")
        self.forward(body)


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
