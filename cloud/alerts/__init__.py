"""Alerts: the lifecycle of what the rules find (open -> acknowledged -> resolved, with an
audit trail), the valuation history, and how both reach people (HTTP API, Server-Sent Events,
signed webhooks).

Import nothing here: ``cloud.alerts.models`` is imported by ``cloud.db.models`` users and must
stay light; the service, routes and dispatcher are imported by name where they are used.
"""
