"""Rules a config must keep that need more than one value, or the file system: file names
that fit and do not collide, one place named once, and warnings about exposed secrets and
folders others may write to."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

from db_backup.config.schema import BackupConfig, Config, EmailNotifier, LocalStorage
from db_backup.naming import file_prefix, longest_file_names, unusable_name
from db_backup.place import place_of, shared_folder_risk


def exposed_secret_warnings(source: Path, config: Config) -> list[str]:
    """A literal password or secret key in a file other users can read is a leak waiting
    to happen."""
    mode = source.stat().st_mode & 0o777
    if not mode & 0o044 or not config.literal_secret_lines:
        return []
    where = ", ".join(str(n) for n in config.literal_secret_lines)
    display = config.source
    return [
        f"{display} is readable by other users (mode {mode:04o}) and holds a literal secret "
        f"(line {where}); chmod 600 it, or use ${{VAR}} or password_file"
    ]


def secret_file_warnings(config: Config) -> list[str]:
    warnings = []
    for path in sorted({b.password_file for b in config.backups if b.password_file}):
        try:
            mode = Path(path).stat().st_mode & 0o777
        except OSError:
            continue  # reported when a job needs it
        if mode & 0o004:
            warnings.append(
                f"password_file {path} is readable by every user (mode {mode:04o}); chmod 600 it"
            )
    return warnings


def shared_folder_warnings(config: Config) -> list[str]:
    """Storage folders other users may write to: a warning; one that runs will refuse (see
    storage.local.shared_folder_risk) says so."""
    warnings = []
    targets = {t for b in config.backups for t in b.targets if isinstance(t, LocalStorage)}
    for target in sorted(targets, key=lambda t: t.path):
        risk = shared_folder_risk(Path(target.path))
        if risk is None:
            continue
        refused, why = risk
        if refused and not target.allow_world_writable:
            why += "; backups will refuse it: chmod o-w (or +t), or set allow_world_writable: true"
        warnings.append(why)
    return warnings


def file_name_problems(backups: Sequence[BackupConfig | None]) -> list[tuple[int, str]]:
    """Every file name must fit its target (255 bytes in a folder, 1024 in a bucket key),
    and two backups must not write files of the same names in one place: `nightly_a`
    with no prefix and `a` with `prefix: nightly` in one folder would (see place.py:
    two spellings of one folder are one place); so would backup `all.shop` and the
    job a `database: "*"` backup `all` makes for a database `shop`. Returns (index of
    the backup, message) for each."""
    found: list[tuple[int, str]] = []
    owners: dict[tuple[str, str], tuple[int, BackupConfig]] = {}
    present = [(index, backup) for index, backup in enumerate(backups) if backup is not None]
    for index, backup in present:
        for storage in backup.targets:
            names = longest_file_names(backup, storage)
            problem = next(filter(None, map(partial(unusable_name, storage), names)), None)
            if problem is not None:
                longest = "for the longest database names, " if backup.is_wildcard else ""
                found.append((index, f"on {storage.label}: {longest}{problem}"))
            key = (place_of(storage), file_prefix(storage, backup.name))
            owner = owners.setdefault(key, (index, backup))[1]
            if owner is not backup:
                found.append(
                    (
                        index,
                        f"backups {owner.name!r} and {backup.name!r} would write files of the "
                        f"same names ({key[1]}<time>...) in {storage.label}",
                    )
                )
    for (place, start), (index, backup) in owners.items():
        for (wildcard_place, wildcard_start), (_, wildcard) in owners.items():
            stem = wildcard_start[:-1] + "."  # the start of its databases' jobs' files
            database = start[len(stem) : -1]
            if (
                not wildcard.is_wildcard
                or backup.is_wildcard
                or place != wildcard_place
                or not start.startswith(stem)
                or any(fnmatch.fnmatchcase(database, p) for p in wildcard.exclude)
            ):
                continue
            found.append(
                (
                    index,
                    f"backup {backup.name!r} would write files of the same names as backup "
                    f'{wildcard.name!r} (database: "*") writes for a database named '
                    f"{database!r}; rename one, or exclude {database!r} there",
                )
            )
    return found


def same_places(backup: BackupConfig) -> Iterator[tuple[int, int, str]]:
    """(index, index of the first, place) for each target that repeats an earlier one's
    place, however differently spelled (see place.py)."""
    places = [place_of(target) for target in backup.targets]
    for index, place in enumerate(places):
        first = places.index(place)
        if first < index:
            yield index, first, place


def clear_text_password_warnings(config: Config) -> list[str]:
    """An email notifier that logs in without TLS sends its password in clear."""
    return [
        f"notify: {notifier.label}: security: none sends the SMTP password unencrypted; "
        "use starttls or tls"
        for notifier in config.notify
        if isinstance(notifier, EmailNotifier)
        and notifier.security == "none"
        and (notifier.password or notifier.password_file)
    ]
