"""The commented sample config that `db-backup generate` writes. It validates as written."""

SAMPLE_CONFIG = """\
# db-backup configuration. Check it with:  db-backup validate -c THIS_FILE [--connect]
# Every string value may use ${VAR} or ${VAR:-default} (environment variables); $$ is a
# literal $. Relative paths are relative to this file.

# Dumps running at once across all servers (default: number of CPUs, at least 2).
concurrency: 4

# Merged under every backup below; any backup key may appear here. Nested mappings
# (storage, compression) merge key by key; a backup's own value wins. A list of storage
# targets, or a target of another kind, replaces the inherited storage instead.
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
  storage:                            # one target, or a list of targets (see "shop")
    kind: local                       # local (the default) | s3 | restic
    path: /var/backups/db             # created 0700 if missing; files are written 0600
    prefix: nightly                   # files: nightly_<name>_<UTC time>.sql.gz
  retention:                          # which backups to keep; none set: keep all
    keep_last: 3                      # a backup kept by any rule stays; the newest always
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 6
    # keep_hourly, keep_yearly: 0
    # max_age: 90d                    # also keep everything younger than this
  compression:
    algorithm: gzip                   # gzip (.sql.gz) | zstd (.sql.zst) | none
    level: 1                          # gzip 1-9 (1-3: fast isal), zstd 1-19 (default 3)
    # threads: 2                      # for one stream; default: 1 for levels 1-3, else the
    #                                 # CPU cores shared among the jobs running at once

backups:
  - name: shop                        # letters, digits, . _ -; unique; used in file names
    database: shop
    format: plain                     # plain: .sql.gz (psql restores) | custom: .dump (pg_restore)
    storage:                          # one dump, streamed to every target at once
      - path: /var/backups/db
        prefix: nightly
      - kind: s3
        bucket: company-db-backups
        prefix: postgres/shop         # a folder in the bucket
        region: eu-central-1
        # endpoint_url: https://s3.example.internal:9000   # S3-compatible servers
        # path_style: true            # most S3-compatible servers want this
        # Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE / instance
        # role, as for the aws CLI; or name them here (never write the secret itself):
        # access_key_id: ${S3_KEY_ID}
        # secret_access_key: ${S3_SECRET}
        # part_size: 8MiB             # multipart part size (5MiB-5GiB); doubles every 1000
        # upload_concurrency: 4       # parts in flight; memory ~ (this + 2) x part_size
        # A server that stops answering fails this target (the others go on) after at most
        # max_attempts x (connect_timeout + read_timeout), plus a few seconds:
        # connect_timeout: 10s
        # read_timeout: 30s           # the longest the server may stay silent
        # max_attempts: 3
        # Runners on several machines writing here never dump one job at once: each job's
        # lease lives in this bucket; a runner that died holds its jobs this long at most.
        # lease_duration: 60s
        # leases: false               # only if one machine writes here
        retention:                    # this target only: keep more in the bucket
          keep_daily: 30
          keep_monthly: 12
      # A restic repository: deduplicated, so a night costs what changed, not a full dump.
      # It takes the dump uncompressed (restic compresses and encrypts it itself).
      # - kind: restic
      #   repository: /srv/restic/db    # or s3:https://host/bucket/path, sftp:..., rest:...
      #   password: ${RESTIC_PASSWORD}  # or password_file; restic always encrypts
      #   init: true                    # create the repository if there is none
      #   env: {AWS_ACCESS_KEY_ID: ${S3_KEY_ID}, AWS_SECRET_ACCESS_KEY: ${S3_SECRET}}

  - name: analytics
    host: db2.internal
    database: analytics
    format: custom
    globals: true                     # also save roles and tablespaces (pg_dumpall -g)

  - name: everything-on-db3
    host: db3.internal
    database: "*"                     # one job per database, found at run time
    exclude: [postgres, "template*"]  # glob patterns

# `db-backup verify --restore` restores backups into a throwaway PostgreSQL it starts from the
# local server binaries. Or into a scratch server: a database of its own per test, dropped
# afterwards (the roles the dumps need must exist there).
# verify:
#   sandbox:
#     host: pg-scratch.internal
#     username: restore_tester
#     password: ${SCRATCH_PASSWORD}

# Prometheus metrics of every job, written after each run (README, "Monitoring").
# metrics:
#   textfile: /var/lib/prometheus/node-exporter/db_backup.prom
#   pushgateway: {url: "http://pushgateway:9091", job: db_backup}

# Who hears of each run: one message per run (README, "Monitoring"); `db-backup notify-test`
# sends a test message to each. A backup with `notify: false` is left out of them.
# notify:
#   - kind: slack
#     webhook_url: ${SLACK_WEBHOOK_URL}
#     on: [failure]                   # failure (the default), success, always
#   - kind: email
#     host: smtp.example.com
#     port: 587
#     security: starttls              # starttls, tls or none
#     username: backup@example.com
#     password: ${SMTP_PASSWORD}      # or password_file
#     from: backup@example.com
#     to: [ops@example.com]
#   - kind: webhook                   # a JSON POST of the run report (backup --json)
#     url: https://hooks.example.com/db-backup
#     headers: {Authorization: "Bearer ${HOOK_TOKEN}"}
#   - kind: healthchecks              # /start as a run starts; then success or /fail
#     url: https://hc-ping.com/${HC_UUID}
"""
