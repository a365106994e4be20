t.{date_column} < %(cutoff)s AND t.{soft_delete_column} IS NULL
