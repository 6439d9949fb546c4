"""The config's typed shape: frozen msgspec Structs that reject unknown keys.

A backup entry is a tagged union on `type` (only `postgres` today; `mysql` slots in beside it).
Cross-field rules that msgspec cannot express (unique names, password vs password_file, ...)
live in `load.py`, which reports them with file positions.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from db_backup.redact import mask_scheme, mask_url_path, redact_url, url_forms

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
MAX_NAME_LENGTH = 100

# Databases matched by `database: "*"` never include templates; `exclude` globs remove more.
ALL_DATABASES = "*"

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class Duration(float):
    """Seconds, written in config as 30, "30s", "5m", "2h" or "1h30m" (see units.parse_duration)."""


class ByteSize(int):
    """Bytes, written in config as 16777216, "16MiB", "16MB" or "1GiB" (see units.parse_size)."""


# Chosen by the benchmark (README): gzip level 1 runs on isal's igzip, ~10x as fast as gzip -6
# per core, and its output was within 2 % of gzip -6's size on realistic rows.
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3, "none": 0}
LEVEL_RANGES = {"gzip": range(1, 10), "zstd": range(1, 20)}


class CompressionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How dump output is compressed before it is stored."""

    algorithm: Literal["gzip", "zstd", "none"] = "gzip"
    level: int | None = None  # default per algorithm: DEFAULT_LEVELS
    # Threads for one stream; default: 1 for gzip 1-3 (isal), else the cores shared out
    # among the jobs running at once (see stages.compress.compression_threads).
    threads: Positive | None = None

    @property
    def effective_level(self) -> int:
        return DEFAULT_LEVELS[self.algorithm] if self.level is None else self.level


class EncryptionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`encryption:` — age, to public keys only: the backup host needs no secret to encrypt,
    and any one recipient's identity decrypts. The loader reads `recipients_file` and leaves
    every recipient, checked, in `recipients`."""

    recipients: tuple[str, ...] = ()  # "age1…", "ssh-ed25519 AAAA… comment", "ssh-rsa …"
    recipients_file: str | None = None  # one per line; blank lines and # comments ignored


Count = Annotated[int, msgspec.Meta(ge=0)]


class RetentionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which of a job's backups to keep (see retention.py); none set: keep everything."""

    keep_last: Count = 0
    keep_hourly: Count = 0
    keep_daily: Count = 0
    keep_weekly: Count = 0
    keep_monthly: Count = 0
    keep_yearly: Count = 0
    max_age: Duration | None = None  # seconds

    @property
    def is_empty(self) -> bool:
        """No rule at all: keep everything (deleting needs a rule that says so)."""
        counts = (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )
        return not any(counts) and self.max_age is None


SECRET_FIELDS = frozenset({"password", "secret_access_key", "env"})


def _masking_repr(secret_fields: frozenset[str]) -> Callable[[msgspec.Struct], str]:
    """A repr() that shows `***` for the fields holding secrets (debug output, tracebacks)."""

    def masked(self: msgspec.Struct) -> str:
        shown = (
            f"{name}={'***' if name in secret_fields and value else repr(value)}"
            for name in self.__struct_fields__
            for value in [getattr(self, name)]
        )
        return f"{type(self).__name__}({', '.join(shown)})"

    return masked


_masked_repr = _masking_repr(SECRET_FIELDS)


class _Target(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"
):
    """What every kind of storage target has; each kind is tagged by `kind:` and describes
    itself (label, what goes in front of its file names, how long a name may be), so code
    above never asks which kind it holds."""

    retention: RetentionConfig | None = None  # this target only; else the backup's

    __repr__ = _masked_repr

    @property
    def label(self) -> str:
        """How messages and `list` name this target."""
        raise NotImplementedError

    @property
    def name_prefix(self) -> str:
        """What goes in front of every file name here (before `<job>_<time>`)."""
        raise NotImplementedError

    def name_problem(self, filename: str) -> str | None:
        """Why a backup file (and its manifest) cannot have this name here, or None."""
        raise NotImplementedError

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for each fault in this entry that msgspec cannot see."""
        raise NotImplementedError

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values in this entry that must never be shown (masked wherever they appear)."""
        return ()

    @property
    def takes_raw(self) -> bool:
        """Whether this target is handed the dump as the program wrote it, not the stored
        (compressed, encrypted) stream: a target that deduplicates does both itself."""
        return False


def _prefix_problems(prefix: str) -> list[tuple[str, str]]:
    """A file-name prefix's fault, if any (folders and restic repositories take one)."""
    if prefix and (not NAME_PATTERN.fullmatch(prefix) or len(prefix) > MAX_NAME_LENGTH):
        return [("prefix", f"invalid prefix {prefix!r}: use {NAME_RULE}")]
    return []


# Most file systems allow 255 bytes in a file name; S3 allows 1024 in a key.
FILE_NAME_BYTES = 255
S3_KEY_BYTES = 1024
# A manifest is first written under `<file>.json.<random hex>.partial` (storage.local).
TEMPORARY_TOKEN_BYTES = 6
_LONGEST_SIDE_FILE = len(".json.") + 2 * TEMPORARY_TOKEN_BYTES + len(".partial")


class LocalStorage(_Target, frozen=True, tag="local"):
    """A folder on this machine (or a mounted file system). `kind: local` may be left out."""

    path: str
    # Put in front of every file name: <prefix>_<job>_<timestamp>.sql.gz.
    prefix: str = ""
    # A folder every user may write to without the sticky bit is refused (anyone could
    # delete or replace the backups in it) unless this says the risk is known and accepted.
    allow_world_writable: bool = False

    @property
    def label(self) -> str:
        return f"local:{self.path}"

    @property
    def name_prefix(self) -> str:
        return f"{self.prefix}_" if self.prefix else ""

    def problems(self) -> list[tuple[str, str]]:
        found = _prefix_problems(self.prefix)
        if not self.path.strip():
            found.append(("path", "storage path is empty"))
        return found

    def name_problem(self, filename: str) -> str | None:
        size = len(filename.encode()) + _LONGEST_SIDE_FILE
        if size <= FILE_NAME_BYTES:
            return None
        return (
            f"file names would be {size} bytes long (with the manifest's temporary name), "
            f"more than the {FILE_NAME_BYTES} a file system allows; shorten the backup's "
            f"name or the target's prefix by {size - FILE_NAME_BYTES}"
        )


# S3 allows 10,000 parts per upload, each (but the last) at least 5 MiB.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024**3
DEFAULT_PART_SIZE = 8 * 1024 * 1024  # as the aws CLI's
_SAFE_KEY_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]*")


MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 3.0, 3600.0


class S3Storage(_Target, frozen=True, tag="s3"):
    """A bucket on AWS S3 or an S3-compatible server (SeaweedFS, MinIO, Ceph, R2, ...)."""

    bucket: str
    prefix: str = ""  # the "folder" inside the bucket, e.g. "postgres/nightly"
    endpoint_url: str | None = None  # None: AWS itself
    region: str | None = None  # None: from the AWS configuration, else us-east-1
    # Both or neither (empty counts as not given); neither: the standard AWS chain
    # (AWS_ACCESS_KEY_ID..., AWS_PROFILE, ~/.aws/credentials, instance roles). Write them as
    # ${VAR}, never literally.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    profile: str | None = None  # a named profile of ~/.aws/config
    path_style: bool = False  # bucket in the path, not the host name (most S3-compatible servers)
    part_size: ByteSize = ByteSize(DEFAULT_PART_SIZE)  # doubled every 1,000 parts
    upload_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # parts in flight
    # Bounds on every request, so a silent endpoint fails this target in a known time: at
    # most max_attempts x (connect_timeout + read_timeout), plus a few seconds of backoff.
    # read_timeout is the longest the server may stay silent, not a bound on a whole part.
    connect_timeout: Duration = Duration(10.0)
    read_timeout: Duration = Duration(30.0)
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    # A job's lease in this bucket (lease.py) lasts this long without a renewal; its holder
    # renews it every third of that. A runner that died holds its jobs this long at most.
    lease_duration: Duration = Duration(60.0)
    # false: no leases here (a bucket only this machine writes to; a server that refuses
    # conditional writes). Then nothing keeps runners on several machines apart.
    leases: bool = True

    @property
    def request_bound(self) -> float:
        """Seconds after which one request to a silent endpoint has surely failed."""
        # botocore's standard mode waits at most min(2 ** i, 20) s before retry i + 1
        backoff = sum(min(2.0**i, 20.0) for i in range(self.max_attempts - 1))
        return self.max_attempts * (self.connect_timeout + self.read_timeout) + backoff

    @property
    def folder(self) -> str:
        """The key prefix objects go under: "" or "some/folder/"."""
        stripped = self.prefix.strip("/")
        return f"{stripped}/" if stripped else ""

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.secret_access_key,) if self.secret_access_key else ()

    @property
    def label(self) -> str:
        endpoint = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.folder}{endpoint}"

    @property
    def name_prefix(self) -> str:
        return ""  # the prefix is a folder, not part of the name

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.bucket.strip():
            found.append(("bucket", "bucket name is empty"))
        parts = self.prefix.strip("/").split("/")
        if not _SAFE_KEY_PREFIX.fullmatch(self.prefix) or any(p in {".", ".."} for p in parts):
            found.append(
                (
                    "prefix",
                    f"invalid prefix {self.prefix!r}: use letters, digits and !_.*'()-, "
                    "folders separated by '/', no '.' or '..' folders",
                )
            )
        if self.part_size < MIN_PART_SIZE or self.part_size > MAX_PART_SIZE:
            found.append(("part_size", "S3 parts must be between 5MiB and 5GiB"))
        if not MIN_LEASE_SECONDS <= self.lease_duration <= MAX_LEASE_SECONDS:
            found.append(("lease_duration", "a lease lasts between 3s and 1h"))
        if bool(self.access_key_id) != bool(self.secret_access_key):  # "" (${VAR:-}): none
            found.append(
                ("access_key_id", "give both access_key_id and secret_access_key, or neither")
            )
        url = self.endpoint_url
        if url is not None and not re.match(r"https?://[^/]", url, re.IGNORECASE):
            found.append(("endpoint_url", f"expected an http:// or https:// URL, got {url!r}"))
        return found

    def name_problem(self, filename: str) -> str | None:
        size = len(f"{self.folder}{filename}.json".encode())
        if size <= S3_KEY_BYTES:
            return None
        return (
            f"object keys would be {size} bytes long, more than the {S3_KEY_BYTES} S3 "
            f"allows; shorten the target's prefix or the backup's name by {size - S3_KEY_BYTES}"
        )


_ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# restic's `check --read-data-subset`: a percentage ("5%"), a part ("1/5") or a size ("500M").
_DATA_SUBSET = re.compile(r"\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?")


class ResticStorage(_Target, frozen=True, tag="restic"):
    """A restic repository (storage/restic.py): deduplicated, compressed and encrypted by
    restic, so the dump goes in as the program wrote it — neither compressed nor age-encrypted
    by us (either would defeat deduplication; restic encrypts with the repository's key)."""

    repository: str  # a folder, or anything restic accepts: s3:https://host/bucket/path, sftp:…
    password: str | None = None  # restic always encrypts: this or password_file
    password_file: str | None = None
    restic_path: str = "restic"
    init: bool = False  # create the repository when there is none yet
    # Given to restic only (credentials of its backend: AWS_ACCESS_KEY_ID, ...), never set in
    # db-backup's own environment. Write secrets as ${VAR}.
    env: dict[str, str] = msgspec.field(default_factory=dict)
    prefix: str = ""  # put in front of every file name, as for a folder
    # Bounds every restic command but the streams (a backup's, which the job's timeout bounds,
    # and a restore's) and the long ones below: listing, manifests, forget, unlock.
    timeout: Duration = Duration(600.0)
    # Bounds `restic prune` and `restic check`, which read much of the repository.
    maintenance_timeout: Duration = Duration(6 * 3600.0)
    # `verify` also runs `restic check`; this reads a part of the data too (`--read-data-subset`).
    read_data_subset: str | None = None

    def __hash__(self) -> int:  # a target is a dict key (one store per target): env too
        return hash(
            tuple(
                tuple(sorted(value.items())) if isinstance(value, dict) else value
                for value in msgspec.structs.astuple(self)
            )
        )

    @property
    def label(self) -> str:
        return f"restic:{shown_repository(self.repository)}"

    @property
    def name_prefix(self) -> str:
        return f"{self.prefix}_" if self.prefix else ""

    @property
    def takes_raw(self) -> bool:
        return True

    @property
    def secrets(self) -> tuple[str, ...]:
        in_url = _url_password(self.repository.partition(":")[2])
        return tuple(filter(None, (self.password, in_url, *self.env.values())))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not self.repository.strip():
            found.append(("repository", "repository is empty"))
        if bool(self.password) == bool(self.password_file):
            found.append(
                ("password", "give password or password_file (restic always encrypts), not both")
            )
        found += _prefix_problems(self.prefix)
        for name in self.env:
            if not _ENVIRONMENT_NAME.fullmatch(name) or name.startswith("RESTIC_"):
                found.append(
                    (
                        "env",
                        f"{name!r}: not an environment variable db-backup passes on "
                        "(RESTIC_* are set from this target's own keys)",
                    )
                )
        subset = self.read_data_subset
        if subset is not None and not _DATA_SUBSET.fullmatch(subset):
            found.append(
                ("read_data_subset", f"{subset!r}: expected a percentage (5%), n/t or a size")
            )
        return found

    def name_problem(self, filename: str) -> str | None:
        return None  # a file in a snapshot: no length limit that a backup's name reaches


# restic's backends other than a local folder (`local:` names a folder too).
_RESTIC_BACKENDS = ("sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone")


def is_local_repository(repository: str) -> bool:
    """Whether a restic repository is a folder on this machine (a path, or `local:path`)."""
    scheme, colon, _ = repository.partition(":")
    return not colon or scheme not in _RESTIC_BACKENDS


def _url_password(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).password
    except ValueError:
        return None


def shown_repository(repository: str) -> str:
    """A restic repository fit to print: a password in a rest:/s3: URL masked."""
    scheme, colon, rest = repository.partition(":")
    if colon and "://" in rest:
        return f"{scheme}:{redact_url(rest)}"
    return repository


# The union every storage entry converts to; GCS, Azure, SFTP slot in beside these.
StorageConfig = LocalStorage | S3Storage | ResticStorage


class _Backup(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """One `backups:` entry after `defaults:` were merged under it: what every engine's
    entry has. Each engine is a subclass tagged by its `type`."""

    engine: ClassVar[str]  # which Source dumps it (sources/); the manifest's `engine`

    name: str
    database: str
    host: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    exclude: tuple[str, ...] = ()
    # One target or a list; the loader always leaves a tuple here (see `targets`).
    storage: StorageConfig | tuple[StorageConfig, ...]
    compression: CompressionConfig = CompressionConfig()
    encryption: EncryptionConfig | None = None  # None: stored as compressed, readable
    max_per_host: Positive | None = None
    globals: bool = False
    connect_timeout: Duration = Duration(10.0)
    timeout: Duration | None = None  # per attempt
    retries: Annotated[int, msgspec.Meta(ge=0, le=100)] = (
        0  # extra attempts after a transient failure
    )
    retry_delay: Duration = Duration(5.0)  # first backoff; doubles per attempt, with jitter
    retention: RetentionConfig = RetentionConfig()
    notify: bool = True  # false: the config's notifiers hear nothing of this backup
    # When `serve` runs it: 5-field cron in the config's `timezone`, or "@every 6h"; None:
    # only when asked (`backup`, or the web UI's "run now").
    schedule: str | None = None
    jitter: Duration | None = None  # start each scheduled run up to this much later

    __repr__ = _masked_repr

    @property
    def targets(self) -> tuple[StorageConfig, ...]:
        """Every place this backup is stored, in config order."""
        return self.storage if isinstance(self.storage, tuple) else (self.storage,)

    def retention_for(self, target: StorageConfig) -> RetentionConfig:
        """The policy on one target: its own if it has one, else the backup's."""
        return target.retention if target.retention is not None else self.retention

    @property
    def is_wildcard(self) -> bool:
        """True when `database: "*"` asks for every database on the server."""
        return self.database == ALL_DATABASES


class PostgresBackup(_Backup, frozen=True, kw_only=True, tag="postgres"):
    """`type: postgres` (the default)."""

    engine: ClassVar[str] = "postgres"

    # host None: libpq's default (PGHOST or the local socket)
    port: Port = 5432
    format: Literal["plain", "custom"] = "plain"
    pg_dump_path: str | None = None


class MysqlBackup(_Backup, frozen=True, kw_only=True, tag="mysql"):
    """`type: mysql` — and `type: mariadb`, the same engine under the server's own name."""

    engine: ClassVar[str] = "mysql"

    # host None (and no socket): the client's default, the local server's socket
    port: Port = 3306
    socket: str | None = None  # a Unix socket instead of TCP
    format: Literal["plain"] = "plain"
    dump_path: str | None = None  # default: mariadb-dump, else mysqldump, on PATH


class MariadbBackup(MysqlBackup, frozen=True, kw_only=True, tag="mariadb"):
    """`type: mariadb`: a MysqlBackup; the name documents the server."""


# The union every loader converts to, tagged by `type`.
BackupConfig = PostgresBackup | MysqlBackup | MariadbBackup


class SandboxConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A scratch server for `verify --restore` instead of a throwaway one: each test creates
    a database of its own there and drops it afterwards; nothing else is changed (globals
    are not applied: the roles the dumps need must exist there)."""

    host: str | None = None
    port: Port = 5432
    username: str | None = None
    password: str | None = None
    password_file: str | None = None

    __repr__ = _masked_repr


class VerifyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`verify:` at the top level."""

    sandbox: SandboxConfig | None = None  # None: a throwaway server per verify run
    identity_file: str | None = None  # age identities that decrypt encrypted backups
    schedule: str | None = None  # `serve`: restore-test every job's newest backup then


class WebConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`web:` — the web UI of `serve --web`. On a loopback address it needs no login; on any
    other it refuses to start without one: a bearer token (`token_file`), or a username with
    a password hash (`db-backup hash-password`)."""

    token_file: str | None = None
    username: str | None = None
    password_hash: str | None = None  # scrypt$N$r$p$salt$hash, see web/security.py
    read_only: bool = False  # no actions: pages only


class PruneConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`prune:` at the top level (retention also runs after every committed backup)."""

    schedule: str | None = None  # `serve`: apply every retention policy then


class RestoreConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`restore:` at the top level."""

    identity_file: str | None = None  # age identities that decrypt encrypted backups


class PushgatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where to push the metrics too (a Prometheus Pushgateway)."""

    url: str
    job: str = "db_backup"  # the grouping key Prometheus' `job` label takes
    timeout: Duration = Duration(10.0)


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`metrics:` at the top level: where the Prometheus metrics go after each run."""

    textfile: str | None = None  # for node_exporter's textfile collector
    pushgateway: PushgatewayConfig | None = None


# -- notifications (notify.py sends them; notification.py words them) ---------------------------

# `on:` — which runs a notifier hears of: failed ones (the default), successful ones, or all.
NotifyWhen = Literal["failure", "success", "always"]
# Values that hold a token (webhook URLs, ping URLs, headers) or a password: masked in repr,
# never printed; the loader remembers them so that no log line shows them either.
NOTIFIER_SECRET_FIELDS = frozenset({"webhook_url", "url", "urls", "headers", "password"})
# What a `notify:` entry may show in a message; anything else there is treated as a secret.
NOTIFIER_PLAIN_FIELDS = frozenset(
    {"kind", "on", "timeout", "retries", "host", "port", "security", "username", "from", "to"}
    | {"password_file", "ca_file"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A mail address: `ops@example.com` or `Ops <ops@example.com>` (no quoting, no IP literals).
_ADDR_SPEC = r"[^\s<>@,;:\"()\[\]\\]+@[^\s<>@,;:\"()\[\]\\]+"
_ADDRESS = re.compile(rf"{_ADDR_SPEC}|[^<>@\x00-\x1f]*<{_ADDR_SPEC}>")


def is_secret(path: tuple[str | int, ...]) -> bool:
    """Does the config value at `path` hold a secret (never echoed, warned about if literal)?"""
    if path[:1] == ("notify",):
        named = [part for part in path[2:] if isinstance(part, str)]
        return not named or named[0] not in NOTIFIER_PLAIN_FIELDS
    in_env = len(path) >= 2 and path[-2] == "env"  # a restic target's backend credentials
    return bool(path) and (path[-1] in SECRET_FIELDS or in_env)


class _Notifier(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"
):
    """What every `notify:` entry has: bounds on each send. A send that fails is tried again
    `retries` times (1 s, then 2 s, ... apart) when the failure may pass (no answer, a 5xx);
    so one notifier holds a run up at most (retries + 1) x timeout, plus the pauses."""

    timeout: Duration = Duration(10.0)  # per attempt, connecting included
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 2

    __repr__ = _masking_repr(NOTIFIER_SECRET_FIELDS)

    @property
    def label(self) -> str:
        """How warnings name this notifier: its kind and where it sends, tokens masked."""
        raise NotImplementedError

    @property
    def when(self) -> tuple[NotifyWhen, ...]:
        """Which runs it hears of (healthchecks: every run, its start too)."""
        return ("always",)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What no output or log line may show of it (see redact.SecretFilter)."""
        return ()

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for each fault msgspec cannot see."""
        return []


class _Messenger(_Notifier, frozen=True, kw_only=True):
    """A notifier that sends a message, only for the runs `on` names."""

    on: NotifyWhen | tuple[NotifyWhen, ...] = ("failure",)

    @property
    def when(self) -> tuple[NotifyWhen, ...]:
        return (self.on,) if isinstance(self.on, str) else self.on

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if not self.when:
            found.append(("on", "name at least one of: failure, success, always"))
        return found


def _http_url_problem(key: str, url: str) -> list[tuple[str, str]]:
    """Why `url` cannot be sent to (never quoting it: it may hold a token), or nothing."""
    if not url:
        return [(key, "is empty")]
    if not re.match(r"https?://[^/]", url, re.IGNORECASE) or _CONTROL.search(url):
        return [(key, "expected an http:// or https:// URL")]
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 (it raises on a malformed host or port)
    except ValueError:
        return [(key, "not a valid URL (its host or port)")]
    return []


class SlackNotifier(_Messenger, frozen=True, kw_only=True, tag="slack"):
    """A Slack incoming webhook (or one that speaks its format: Mattermost, Rocket.Chat)."""

    webhook_url: str

    @property
    def label(self) -> str:
        return f"slack {mask_url_path(self.webhook_url)}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return url_forms(self.webhook_url)

    def problems(self) -> list[tuple[str, str]]:
        return super().problems() + _http_url_problem("webhook_url", self.webhook_url)


class EmailNotifier(_Messenger, frozen=True, kw_only=True, tag="email"):
    """A plain-text mail through an SMTP server."""

    host: str
    port: Port = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    sender: str = msgspec.field(name="from")
    to: tuple[str, ...]
    ca_file: str | None = None  # a private CA that signed the server's certificate

    @property
    def label(self) -> str:
        return f"email via {self.host}:{self.port} to {', '.join(self.to)}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if not self.host.strip():
            found.append(("host", "is empty"))
        if not self.to:
            found.append(("to", "name at least one recipient"))
        for key, address in [("from", self.sender), *(("to", a) for a in self.to)]:
            if not _ADDRESS.fullmatch(address):
                found.append((key, f"not a mail address: {address!r}"))
        if self.password is not None and self.password_file is not None:
            found.append(("password_file", "give either password or password_file, not both"))
        if (self.password is not None or self.password_file is not None) and not self.username:
            found.append(("username", "a password needs a username"))
        return found


class WebhookNotifier(_Messenger, frozen=True, kw_only=True, tag="webhook"):
    """Any HTTP endpoint: a JSON POST of the run report (`backup --json`'s document)."""

    url: str
    headers: dict[str, str] = {}

    @property
    def label(self) -> str:
        return f"webhook {mask_url_path(self.url)}"

    @property
    def secrets(self) -> tuple[str, ...]:
        # A short value ("4", "yes") is no secret, and masking it would garble every message.
        values = (value for value in self.headers.values() if len(value) >= 8)
        return (*url_forms(self.url), *values)

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems() + _http_url_problem("url", self.url)
        for name, value in self.headers.items():
            bad_value = _CONTROL.search(value) or not value.isascii()
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or bad_value:
                found.append(("headers", f"header {name!r}: a name or value HTTP cannot carry"))
        return found


class HealthchecksNotifier(_Notifier, frozen=True, kw_only=True, tag="healthchecks"):
    """A healthchecks.io (or self-hosted) check: `/start` when a backup run starts, the URL
    itself when it succeeds, `/fail` when it fails; a run that never ends, the service sees."""

    url: str

    @property
    def label(self) -> str:
        return f"healthchecks {mask_url_path(self.url)}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return url_forms(self.url)

    def problems(self) -> list[tuple[str, str]]:
        return super().problems() + _http_url_problem("url", self.url)


class AppriseNotifier(_Messenger, frozen=True, kw_only=True, tag="apprise"):
    """The long tail of services (Discord, Telegram, Teams, ntfy, Matrix, ...) through
    Apprise, an optional extra: `pip install 'db-backup[apprise]'`."""

    urls: tuple[str, ...]  # Apprise URLs, e.g. "tgram://bottoken/ChatID"

    @property
    def label(self) -> str:
        return f"apprise {', '.join(mask_scheme(url) for url in self.urls)}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(form for url in self.urls for form in url_forms(url))

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if not self.urls:
            found.append(("urls", "name at least one Apprise URL"))
        if any("://" not in url or _CONTROL.search(url) for url in self.urls):
            found.append(("urls", "expected Apprise URLs (service://...)"))  # they hold tokens
        return found


NotifierConfig = (
    SlackNotifier | EmailNotifier | WebhookNotifier | HealthchecksNotifier | AppriseNotifier
)


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """A whole, validated config file."""

    source: str  # the file it came from, for messages
    concurrency: int | None
    backups: tuple[BackupConfig, ...]
    verify: VerifyConfig = VerifyConfig()
    restore: RestoreConfig = RestoreConfig()
    prune: PruneConfig = PruneConfig()
    web: WebConfig = WebConfig()
    timezone: str | None = None  # of every schedule; None: the machine's own
    metrics: MetricsConfig = MetricsConfig()
    notify: tuple[NotifierConfig, ...] = ()
    # Notifiers left out because a ${VAR} they need is unset, where a command may run
    # without secrets (list, prune, verify): (label, why), for a warning when one would send.
    muted_notifiers: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()  # risky but valid settings, for the CLI to print
    literal_secret_lines: tuple[int, ...] = ()  # where a password or secret key is written out


class RawConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The top level of the file, before `defaults:` are merged into each backup."""

    concurrency: Positive | None = None
    defaults: dict[str, Any] = {}
    backups: list[Any]
    verify: VerifyConfig = VerifyConfig()
    restore: RestoreConfig = RestoreConfig()
    prune: PruneConfig = PruneConfig()
    web: WebConfig = WebConfig()
    timezone: str | None = None
    metrics: MetricsConfig = MetricsConfig()
    notify: list[Any] | None = None  # NotifierConfig entries, converted one by one (load.py)
