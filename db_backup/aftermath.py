"""What follows a backup run, for `backup` and for each run `serve` fires: the metrics
published and the notifiers told. Neither ever changes the run's outcome; what failed comes
back as warnings."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from db_backup.config.schema import BackupConfig, Config
from db_backup.model import RunReport
from db_backup.notification import Delivery

if TYPE_CHECKING:
    from db_backup.notify import Notifications


def notifications_for(config: Config, selected: Sequence[BackupConfig]) -> Notifications | None:
    """The config's notifiers, when one of the selected backups is to be told of."""
    if not config.notify or not any(backup.notify for backup in selected):
        return None
    from db_backup.notify import Notifications  # httpx and aiosmtplib: only when used

    return Notifications(config.notify)


async def after_run(
    config: Config, report: RunReport, code: int, notifications: Notifications | None
) -> tuple[list[str], list[Delivery]]:
    """Publish the run's metrics, then send its notice; the warnings and the deliveries."""
    from db_backup.report import json_report

    warnings: list[str] = []
    metrics = config.metrics
    if not report.interrupted_by and (metrics.textfile or metrics.pushgateway):
        from db_backup.publish import publish_metrics  # urllib and the like: only when used

        warnings += await publish_metrics(config, report)
    deliveries: list[Delivery] = []
    if notifications is not None:
        from db_backup.notification import run_notice

        document = json_report(report, code, config=config.source, warnings=warnings)
        host = socket.gethostname()
        notice = run_notice(report, host=host, config=config.source, document=document)
        # Stopped by a signal: one short attempt each, within the forced exit's time.
        deliveries = list(await notifications.finish(notice, hurry=bool(report.interrupted_by)))
        warnings += [delivery.warning for delivery in deliveries if not delivery.ok]
    return warnings, deliveries
