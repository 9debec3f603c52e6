"""reach: a reachability monitor for messaging services that governments block."""

__version__ = "0.1.0"
