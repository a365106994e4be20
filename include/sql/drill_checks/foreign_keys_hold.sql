-- Restore drill check: every foreign key still holds in the restored copy. Generic: any database.
--
-- One row per foreign key constraint in a user schema. problems = child rows whose key columns are
-- set but match no parent row (MATCH SIMPLE: a row with any NULL key column is exempt; MATCH FULL: a
-- row with some but not all key columns NULL counts too). Multi-column keys compare column by column
-- with the constraint's own equality operators. Each constraint's anti-join (NOT EXISTS) is built
-- from the catalog and run through query_to_xml(), so the whole check is this one SELECT.
-- Partition clones of a constraint (conparentid <> 0) are skipped: the check on the partitioned
-- table covers every partition.
--
-- Columns: check_name text, problems bigint (0 = passed), detail text. detail carries schema, table,
-- constraint and column names only, never row data (the database holds PHI).
SELECT format('foreign key %s.%s.%s', k.child_schema, k.child_table, k.conname)::text AS check_name,
       (xpath('/row/n/text()', query_to_xml(k.count_sql, false, true, '')))[1]::text::bigint AS problems,
       format('%s.%s (%s) references %s.%s (%s)%s: count of child rows without a parent row',
              k.child_schema, k.child_table, k.child_cols, k.parent_schema, k.parent_table, k.parent_cols,
              CASE WHEN k.convalidated THEN '' ELSE ' [constraint NOT VALID]' END)::text AS detail
FROM (
    SELECT con.conname, con.convalidated,
           cn.nspname AS child_schema, cc.relname AS child_table,
           pn.nspname AS parent_schema, pc.relname AS parent_table,
           cols.child_cols, cols.parent_cols,
           CASE WHEN con.confmatchtype = 'f' AND cardinality(con.conkey) > 1
                -- MATCH FULL: all NULL is exempt, partly NULL is a violation by itself
                THEN format('SELECT (SELECT count(*) FROM %1$s c WHERE NOT (%3$s) AND (%4$s))'
                            ' + (SELECT count(*) FROM %1$s c WHERE %5$s AND NOT EXISTS'
                            ' (SELECT 1 FROM %2$s p WHERE %6$s)) AS n',
                            src.child_from, src.parent_from, cols.all_null, cols.any_null,
                            cols.none_null, cols.join_cond)
                ELSE format('SELECT count(*) AS n FROM %1$s c WHERE %3$s AND NOT EXISTS'
                            ' (SELECT 1 FROM %2$s p WHERE %4$s)',
                            src.child_from, src.parent_from, cols.none_null, cols.join_cond)
           END AS count_sql
    FROM pg_constraint con
    JOIN pg_class cc ON cc.oid = con.conrelid
    JOIN pg_namespace cn ON cn.oid = cc.relnamespace
    JOIN pg_class pc ON pc.oid = con.confrelid
    JOIN pg_namespace pn ON pn.oid = pc.relnamespace
    -- a foreign key does not reach inheritance children (ONLY), but a partitioned table's rows all
    -- live in its partitions (no ONLY)
    CROSS JOIN LATERAL (
        SELECT format('%s%I.%I', CASE WHEN cc.relkind = 'p' THEN '' ELSE 'ONLY ' END,
                      cn.nspname, cc.relname) AS child_from,
               format('%s%I.%I', CASE WHEN pc.relkind = 'p' THEN '' ELSE 'ONLY ' END,
                      pn.nspname, pc.relname) AS parent_from
    ) src
    CROSS JOIN LATERAL (
        SELECT string_agg(ca.attname::text, ', ' ORDER BY u.i) AS child_cols,
               string_agg(pa.attname::text, ', ' ORDER BY u.i) AS parent_cols,
               string_agg(format('p.%I OPERATOR(%I.%s) c.%I', pa.attname, opn.nspname, op.oprname, ca.attname),
                          ' AND ' ORDER BY u.i) AS join_cond,
               string_agg(format('c.%I IS NOT NULL', ca.attname), ' AND ' ORDER BY u.i) AS none_null,
               string_agg(format('c.%I IS NULL', ca.attname), ' AND ' ORDER BY u.i) AS all_null,
               string_agg(format('c.%I IS NULL', ca.attname), ' OR ' ORDER BY u.i) AS any_null
        FROM unnest(con.conkey, con.confkey, con.conpfeqop) WITH ORDINALITY AS u(ck, pk, eqop, i)
        JOIN pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = u.ck
        JOIN pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = u.pk
        JOIN pg_operator op ON op.oid = u.eqop
        JOIN pg_namespace opn ON opn.oid = op.oprnamespace
    ) cols
    WHERE con.contype = 'f'
      AND con.conparentid = 0
      AND cn.nspname NOT IN ('pg_catalog', 'information_schema')
      AND cn.nspname !~ '^pg_(toast|temp_)'
) k
ORDER BY 1;
