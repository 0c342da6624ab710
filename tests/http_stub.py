"""A loopback HTTP server whose answers a test writes, for what no real engine runs here: vLLM and
SGLang responses laid out as their documentation shows (they need CUDA), and broken servers (wrong
replies, cut streams, silence). The engines the workbench can start run for real in
test_remote_servers.py."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Reply = tuple[int, str, object]  # status, content type, body (bytes, dict, or a list of SSE chunks)


class Stub:
    """`routes[(method, path)] = fn(request_body) -> Reply`; `requests` records what arrived."""

    def __init__(self):
        self.routes: dict[tuple[str, str], Callable[[dict], Reply]] = {}
        self.requests: list[tuple[str, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _serve(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}") if n else {}
                stub.requests.append((self.path, body))
                fn = stub.routes.get((method, self.path))
                if fn is None:
                    status, kind, payload = 404, "application/json", {"detail": "Not Found"}
                else:
                    status, kind, payload = fn(body)
                if kind == "hang":
                    threading.Event().wait(payload)
                    return
                self.send_response(status)
                self.send_header("Content-Type", kind)
                if kind == "text/event-stream":
                    self.end_headers()
                    for event in payload:
                        if event is None:  # cut the stream here
                            self.wfile.flush()
                            self.connection.shutdown(2)
                            return
                        data = event if isinstance(event, str) else json.dumps(event)
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                    return
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up early: expected here
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def models(self, model_id: str, owned_by: str = "vllm", max_model_len: int = 4096) -> None:
        self.routes[("GET", "/v1/models")] = lambda _b: (200, "application/json", {
            "object": "list", "data": [{"id": model_id, "object": "model", "owned_by": owned_by,
                                        "max_model_len": max_model_len}]})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
