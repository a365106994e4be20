"""Manual restores: the request, logical, files and config, point in time, and the crash journal."""
