"""``pledgewatch cloud serve``: run the cloud app under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import uvicorn

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
    server = uvicorn.Server(config)
    server.run()
