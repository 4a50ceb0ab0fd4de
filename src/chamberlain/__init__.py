"""chamberlain: an event-driven secrets reconciler (Git intent, OpenBao/Vault values)."""

__version__ = "0.1.0"
