"""``pledgewatch cloud serve``: run the cloud app under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import uvicorn

from cloud.alerts.runtime import stop_streams
from cloud.api.app import create_app
from cloud.settings import CloudSettings

__all__ = ["serve"]


def serve(settings: CloudSettings, host: str = "127.0.0.1", port: int = 8000, *,
          log_level: str = "info") -> None:
    """Serve the cloud app for ``settings`` on ``host:port``; returns after a graceful
    shutdown (the lifespan stops ingest and disposes of the engine)."""
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            proxy_headers=False, server_header=False)
    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            stop_streams(app)  # open SSE streams would otherwise hold the shutdown open
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = _Server(config)
    server.run()
