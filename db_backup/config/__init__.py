"""Config: the YAML file's typed shape, its loader and the sample `generate` writes."""

from db_backup.config.load import load_config, parse_config
from db_backup.config.schema import BackupConfig, Config, PostgresBackup

__all__ = ["BackupConfig", "Config", "PostgresBackup", "load_config", "parse_config"]
