"""pgdr: PostgreSQL backup and disaster recovery, orchestrated by Apache Airflow."""

__version__ = "0.1.0"
