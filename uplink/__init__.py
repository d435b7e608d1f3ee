"""The signed batch envelope, shared by the gateway (which builds it) and the cloud (which
verifies it): msgpack + zstd + Ed25519 in the layout of :mod:`protocols.uplink`.

Import rule: ``protocols`` <- ``uplink`` <- ``gateway``, ``cloud``. This package imports no
other pledgewatch package but ``protocols``.
"""
