"""The commented sample config that `db-backup generate` writes. It validates as written."""

SAMPLE_CONFIG = """\
# db-backup configuration. Check it with:  db-backup validate -c THIS_FILE [--connect]
# Every string value may use ${VAR} or ${VAR:-default} (environment variables); $$ is a
# literal $. Relative paths are relative to this file.

# Dumps running at once across all servers (default: number of CPUs, at least 2).
concurrency: 4

# Merged under every backup below; any backup key may appear here. Nested mappings
# (storage, compression) merge key by key; a backup's own value wins.
defaults:
  type: postgres
  host: localhost
  port: 5432
  username: backup
  # No password here: libpq's ~/.pgpass, PGPASSFILE or PGPASSWORD apply, as for pg_dump.
  # password: ${DB_PASSWORD}          # or from the environment
  # password_file: /run/secrets/db    # or from a file (first line)
  max_per_host: 2                     # dumps at once against one server
  connect_timeout: 10s                # bound on the connection check (30s, 5m, 1h30m ...)
  # timeout: 6h                       # stop a dump that runs longer than this
  storage:
    path: /var/backups/db             # created 0700 if missing; files are written 0600
    prefix: nightly                   # files: nightly_<name>_<UTC time>.sql.gz
  compression:
    algorithm: gzip                   # gzip (.sql.gz) | zstd (.sql.zst) | none
    level: 1                          # gzip 1-9 (1-3: fast isal), zstd 1-19 (default 3)
    # threads: 2                      # for one stream; default: 1 for levels 1-3, else the
    #                                 # CPU cores shared among the jobs running at once

backups:
  - name: shop                        # letters, digits, . _ -; unique; used in file names
    database: shop
    format: plain                     # plain: .sql.gz (psql restores) | custom: .dump (pg_restore)

  - name: analytics
    host: db2.internal
    database: analytics
    format: custom
    globals: true                     # also save roles and tablespaces (pg_dumpall -g)

  - name: everything-on-db3
    host: db3.internal
    database: "*"                     # one job per database, found at run time
    exclude: [postgres, "template*"]  # glob patterns
"""
