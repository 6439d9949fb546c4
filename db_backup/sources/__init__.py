"""Where dumps come from: pure command building (postgres.py) and server I/O (pg_server.py)."""
