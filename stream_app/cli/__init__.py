"""The `churnwatch` command line."""

from stream_app.cli.main import main

__all__ = ["main"]
