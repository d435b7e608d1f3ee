"""pledgewatch: the command-line entry point and the demo composition."""

__version__ = "0.1.0"
