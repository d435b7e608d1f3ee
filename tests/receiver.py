"""A small ingest receiver for gateway tests (the cloud's ingest comes in a later issue): it
verifies each envelope's signature, dedupes on (gateway_id, seq), and records batches.

``mode`` switches behaviour at run time: "up" (200), "down" (503 with Retry-After), "refuse"
(close the connection without answering, like a network partition).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.uplink import MAX_BODY_BYTES, Batch, Reading, UplinkError
from uplink.envelope import decode_envelope


class Receiver:
    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self.keys = keys
        self.mode = "up"
        self.batches: dict[tuple[str, int], Batch] = {}
        self.duplicates = 0
        self.aborted = 0  # requests cut off before their body was complete
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/ingest"

    def readings(self, gateway_id: str | None = None) -> list[Reading]:
        """Every reading received once, in (gateway, seq) order."""
        with self.lock:
            keys = sorted(k for k in self.batches if gateway_id in (None, k[0]))
            return [r for k in keys for r in self.batches[k].readings]

    def seqs(self, gateway_id: str) -> list[int]:
        with self.lock:
            return sorted(s for g, s in self.batches if g == gateway_id)

    def handle(self, body: bytes) -> tuple[int, str]:
        if self.mode == "down":
            return 503, "down"
        try:
            batch = decode_envelope(body, self.keys.get)
        except UplinkError as exc:
            with self.lock:
                self.rejected.append(exc.reason)
            return (403 if exc.reason in ("bad_signature", "unknown_gateway") else 400,
                    exc.reason)
        with self.lock:
            key = (batch.gateway_id, batch.seq)
            if key in self.batches:
                self.duplicates += 1
            else:
                self.batches[key] = batch
        return 200, "ok"


@contextmanager
def receiver(keys: dict[str, Ed25519PublicKey]) -> Iterator[Receiver]:
    rec = Receiver(keys)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            if rec.mode == "refuse":
                self.close_connection = True
                self.connection.close()
                return
            n = int(self.headers.get("Content-Length", "0"))
            if n > MAX_BODY_BYTES + 4096:
                status, reason = 413, "too_large"
            else:
                body = self.rfile.read(n)
                if len(body) != n:  # the sender died mid-request: nothing to answer
                    with rec.lock:
                        rec.aborted += 1
                    self.close_connection = True
                    return
                status, reason = rec.handle(body)
            payload = f'{{"reason": "{reason}"}}'.encode()
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except OSError:  # the sender went away before reading the answer
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="test-receiver",
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
