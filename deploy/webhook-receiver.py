#!/usr/bin/env python3
"""A webhook receiver to try recur's webhooks with: verifies Recur-Signature, prints each
event on one line, answers 200 (or 503 for a forged or stale signature).

    python3 deploy/webhook-receiver.py 8080 whsec_demo
"""
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
SECRET = sys.argv[2] if len(sys.argv) > 2 else "whsec_demo"


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t"), parts.get("v1")
    if t is None or v1 is None or abs(time.time() - int(t)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = verify(SECRET, self.headers.get("Recur-Signature", ""), body)
        event = json.loads(body)
        print(
            ("ok " if ok else "BAD SIGNATURE ")
            + f"{event['type']} order={event['entityId']} seq={event['sequence']} "
            + f"id={self.headers.get('Recur-Event-Id')}",
            flush=True,
        )
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
