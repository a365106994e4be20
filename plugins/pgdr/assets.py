"""Airflow Assets that pgdr DAGs update; each event's extra names the backup."""

from airflow.sdk import Asset

LOGICAL_BACKUP = Asset(name="pgdr_logical_backup", uri="pgdr://backups/logical", group="pgdr")
BASE_BACKUP = Asset(name="pgdr_base_backup", uri="pgdr://backups/base", group="pgdr")
FILES_BACKUP = Asset(name="pgdr_files_backup", uri="pgdr://backups/files", group="pgdr")
CONFIG_BACKUP = Asset(name="pgdr_config_backup", uri="pgdr://backups/config", group="pgdr")
