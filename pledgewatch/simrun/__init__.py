"""The simulation runner: world observations -> device bytes -> edge -> gateway -> cloud, and
the scorer that compares what the cloud raised with what really happened (``score``).

Deliberately empty of imports: ``pledgewatch sim score`` must not pay for the runner's
imports (world, gateway, cloud) and the runner must not pay for the scorer's.
"""
