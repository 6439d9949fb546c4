"""What interrupted runs leave on a target, told from what a finished backup is."""

from __future__ import annotations

from db_backup.naming import leftovers

DONE = "n_shop_20261201T030000Z.sql.gz"


def test_leftovers_are_partials_orphans_and_records_of_backups_that_are_gone() -> None:
    names = [
        DONE,
        f"{DONE}.json",
        f"{DONE}.verify.json",  # a finished backup with its restore test: all kept
        "n_shop_20261201T040000Z.sql.gz.partial",  # a dump cut off
        "n_shop_20261201T050000Z.sql.gz",  # killed before its manifest came
        "n_shop_20261130T030000Z.sql.gz.verify.json",  # its backup was pruned meanwhile
        "n_shop_eu_20261130T030000Z.sql.gz.partial",  # another job's
        "notes.txt",
    ]
    assert leftovers(names, ["n_shop_"]) == {
        "n_shop_20261201T040000Z.sql.gz.partial",
        "n_shop_20261201T050000Z.sql.gz",
        "n_shop_20261130T030000Z.sql.gz.verify.json",
    }
