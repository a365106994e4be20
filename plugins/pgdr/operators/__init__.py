"""pgdr operators, one module per lifecycle stage: backup, wal, verify, restore, drill, retain, report."""
