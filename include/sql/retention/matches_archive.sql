t.{date_column} < %(cutoff)s
