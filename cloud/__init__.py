"""The pledgewatch cloud: verified ingest, the registry of banks/loans/sites/pledged assets,
storage (SQLite or PostgreSQL, optionally InfluxDB), admin CLI and the HTTP API."""
