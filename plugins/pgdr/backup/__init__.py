"""Taking backups: one module per kind, with the tool drivers named after the tool."""
