"""The example's app (web and api): answers every GET with what it received,
as JSON: its own name, the path, and the request's headers. So a caller sees
what the proxies did, e.g. `l5d-client-id`, the identity the inbound proxy
verified for a meshed client. Standard library only.

    python /app.py NAME [PORT]
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        body = json.dumps({"app": sys.argv[1], "path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    ThreadingHTTPServer(("0.0.0.0", port), Echo).serve_forever()
