"""What is kept and what goes: GFS of backups, WAL, data retention."""
