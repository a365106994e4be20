-- Restore drill check (care-commons): electronic visit verification records agree with the visits
-- they verify, and the EVV revision hash chain is unbroken.
--
-- evv_records is checked in one pass, LEFT JOINed to visits on visit_id:
--   * every EVV record's visit exists;
--   * the EVV record repeats its visit's client_id, caregiver_id, organization_id and branch_id, and
--     its service_date is the visit's scheduled_date (each a row of its own, counted only for
--     records whose visit exists).
-- evv_revisions is checked with one anti-join: every revision after the first has its predecessor
-- (same evv_record_id, revision_number - 1) and its previous_revision_hash equals the predecessor's
-- revision_hash.
-- Each comparison runs only when the tables and the columns it needs exist with matching types, so a
-- database without these tables returns no rows. The SQL is built from the catalog and run through
-- query_to_xml(), so this is one SELECT.
--
-- Columns: check_name text, problems bigint (0 = passed; number of EVV records, or revisions, that
-- break the rule), detail text (table and column names only, never row data: the database holds PHI).
SELECT k.check_name::text AS check_name,
       (xpath(format('/row/%s/text()', k.alias), a.x))[1]::text::bigint AS problems,
       k.detail::text AS detail
FROM (
    SELECT query_to_xml(
               format('SELECT %s FROM %s e LEFT JOIN %s v ON v.id = e.visit_id',
                      string_agg(c.expr, ', ' ORDER BY c.ord), min(c.evv_oid::regclass::text),
                      min(c.visits_oid::regclass::text)),
               false, true, '') AS x,
           array_agg(c.check_name ORDER BY c.ord) AS check_names,
           array_agg(c.alias ORDER BY c.ord) AS aliases,
           array_agg(c.detail ORDER BY c.ord) AS details
    FROM (
        SELECT w.ord, j.evv_oid, j.visits_oid,
               'c' || w.ord AS alias,
               CASE WHEN w.ord = 1 THEN 'evv record has its visit'
                    ELSE 'evv record matches its visit: ' || w.evv_col END AS check_name,
               CASE WHEN w.ord = 1
                    THEN 'count(*) FILTER (WHERE v.id IS NULL) AS c1'
                    ELSE format('count(*) FILTER (WHERE v.id IS NOT NULL AND e.%I IS DISTINCT FROM v.%I) AS %s',
                                w.evv_col, w.visit_col, 'c' || w.ord) END AS expr,
               CASE WHEN w.ord = 1
                    THEN 'public.evv_records.visit_id -> public.visits.id: count of EVV records whose visit is missing'
                    ELSE format('public.evv_records.%s = public.visits.%s: count of EVV records whose visit has'
                                ' a different %s', w.evv_col, w.visit_col, w.visit_col) END AS detail
        -- both tables exist and can be joined on evv_records.visit_id = visits.id
        FROM (
            SELECT e.oid AS evv_oid, v.oid AS visits_oid
            FROM (SELECT to_regclass('public.evv_records') AS oid) e,
                 (SELECT to_regclass('public.visits') AS oid) v
            WHERE EXISTS (
                SELECT 1 FROM pg_attribute ea JOIN pg_attribute va ON va.atttypid = ea.atttypid
                WHERE ea.attrelid = e.oid AND ea.attname = 'visit_id' AND NOT ea.attisdropped
                  AND va.attrelid = v.oid AND va.attname = 'id' AND NOT va.attisdropped)
        ) j
        CROSS JOIN (VALUES
            (1, 'visit_id', 'id'),
            (2, 'client_id', 'client_id'),
            (3, 'caregiver_id', 'caregiver_id'),
            (4, 'organization_id', 'organization_id'),
            (5, 'branch_id', 'branch_id'),
            (6, 'service_date', 'scheduled_date')
        ) AS w(ord, evv_col, visit_col)
        WHERE EXISTS (
            SELECT 1 FROM pg_attribute ea JOIN pg_attribute va ON va.atttypid = ea.atttypid
            WHERE ea.attrelid = j.evv_oid AND ea.attname = w.evv_col AND ea.attnum > 0 AND NOT ea.attisdropped
              AND va.attrelid = j.visits_oid AND va.attname = w.visit_col AND va.attnum > 0 AND NOT va.attisdropped)
    ) c
    HAVING count(*) > 0
) a
CROSS JOIN LATERAL unnest(a.check_names, a.aliases, a.details) AS k(check_name, alias, detail)
UNION ALL
SELECT 'evv revision hash chain unbroken'::text,
       (xpath('/row/n/text()', query_to_xml(
           format('SELECT count(*) AS n FROM %1$s r WHERE r.revision_number > 1 AND NOT EXISTS'
                  ' (SELECT 1 FROM %1$s p WHERE p.evv_record_id = r.evv_record_id'
                  ' AND p.revision_number = r.revision_number - 1'
                  ' AND p.revision_hash = r.previous_revision_hash)', t.oid::regclass),
           false, true, '')))[1]::text::bigint,
       'public.evv_revisions: count of revisions after the first whose predecessor (same evv_record_id,'
       ' revision_number - 1) is missing or whose previous_revision_hash differs from its revision_hash'::text
FROM (SELECT to_regclass('public.evv_revisions') AS oid) t
WHERE (SELECT count(*) FROM pg_attribute a
       WHERE a.attrelid = t.oid AND NOT a.attisdropped AND a.attnum > 0
         AND a.attname IN ('evv_record_id', 'revision_number', 'revision_hash', 'previous_revision_hash')) = 4
ORDER BY 1;
