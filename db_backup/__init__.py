"""db-backup: back up many PostgreSQL databases in parallel, streaming and atomically."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("db-backup")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
