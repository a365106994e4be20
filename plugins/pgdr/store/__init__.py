"""The repository: the only door to S3 (keys, uploads and their checks, Object Lock), what a backup is
(manifest, catalog), leases and local staging."""
