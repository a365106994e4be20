"""pgdr operators, one module per lifecycle stage: backup, verify, retention, restore."""
