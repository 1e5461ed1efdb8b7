"""faaso: a self-hosted Functions-as-a-Service platform."""

__version__ = "0.1.0"
