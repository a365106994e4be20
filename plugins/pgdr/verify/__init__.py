"""Checking what is stored: backups (integrity, freshness, formats) and the WAL archive's continuity."""
