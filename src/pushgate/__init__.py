"""pushgate: a self-hosted message push gateway, wire-compatible with Picky Assist Push API v2."""

__version__ = "0.1.0"
