"""hello-python as a native service for the container path: the same routes as the
componentize-py sample in ../hello-python (`/`, `/echo`, `/api/info`), on the standard
library's http.server. Listens on $LISTEN, else $POD_IP:8080, else 0.0.0.0:8080."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def _answer(self, code, kind, body):
        self.send_response(code)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/" and self.command == "GET":
            return self._answer(200, "text/plain", b"hello from flotilla python\n")
        if path == "/echo":
            kind = self.headers.get("content-type") or "application/octet-stream"
            return self._answer(200, kind, body)
        if path == "/api/info" and self.command == "GET":
            info = {"service": "hello-python", "method": self.command, "path": path, "query": query}
            return self._answer(200, "application/json", json.dumps(info).encode())
        return self._answer(404, "text/plain", b"not found\n")

    do_GET = do_POST = do_PUT = _route


def main():
    listen = os.environ.get("LISTEN") or f"{os.environ.get('POD_IP', '0.0.0.0')}:8080"
    host, _, port = listen.rpartition(":")
    print(f"hello-python listening on {listen}", flush=True)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
