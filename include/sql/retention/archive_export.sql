COPY (SELECT t.* FROM {table} AS t JOIN {work} AS w ON w.id = t.{pk} ORDER BY t.{pk})
TO STDOUT WITH (FORMAT csv, HEADER true)
