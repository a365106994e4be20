EXISTS (SELECT 1 FROM {child_table} AS r WHERE {join})
