"""db-backup: back up many PostgreSQL databases in parallel, streaming and atomically."""

# The single source of the version (pyproject.toml reads it): a literal, because looking it
# up through importlib.metadata costs every run ~25 ms of start-up.
__version__ = "0.3.0"

__all__ = ["__version__"]
