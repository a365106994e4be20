-- Restore drill check (care-commons): rows that reference another table by id still find that row,
-- for every relation the database does not enforce with a foreign key constraint.
--
-- The list below is every id relation of the care-commons tables (organization_id, branch_id,
-- client_id, caregiver_id, visit_id, user references in the *_by audit columns, the uuid[] arrays
-- branch_ids and visit_ids, audit_events.user_id/organization_id). A relation is checked only when
-- both tables and both columns exist with matching types (uuid = uuid, or uuid[] elements against
-- uuid), and it is skipped when a foreign key constraint on exactly that column enforces it (then
-- foreign_keys_hold.sql checks it). So a database without these tables returns no rows, and a
-- restore that lost its foreign key constraints is still checked. audit_events.resource_id is
-- polymorphic (its table depends on the resource column) and is not checked.
--
-- Each child table is read once: the scalar relations of a table are LEFT JOINs on the parents'
-- primary keys counted with FILTER; each array relation is one anti-join over its unnested elements.
-- The SQL is built from the catalog and run through query_to_xml(), so this is one SELECT.
--
-- Columns: check_name text, problems bigint (0 = passed; child rows with a reference that matches
-- no parent row), detail text (table and column names only, never row data: the database holds PHI).
SELECT r.check_name::text AS check_name,
       (xpath(format('/row/%s/text()', r.alias), g.x))[1]::text::bigint AS problems,
       r.detail::text AS detail
FROM (
    SELECT query_to_xml(
               CASE WHEN bool_and(rel.is_array)
                    -- one array relation: child rows with at least one element that has no parent row
                    THEN format('SELECT count(DISTINCT c.ctid) AS %s FROM %s c CROSS JOIN LATERAL unnest(c.%I) AS a(v)'
                                ' WHERE a.v IS NOT NULL AND NOT EXISTS (SELECT 1 FROM %s p WHERE p.%I = a.v)',
                                min(rel.alias), min(rel.child_oid::regclass::text), min(rel.child_col),
                                min(rel.parent_oid::regclass::text), min(rel.parent_col))
                    -- every scalar relation of one child table, in one pass
                    ELSE format('SELECT %s FROM %s c %s',
                                string_agg(format('count(*) FILTER (WHERE c.%I IS NOT NULL AND %s.%I IS NULL) AS %s',
                                                  rel.child_col, rel.alias, rel.parent_col, rel.alias),
                                           ', ' ORDER BY rel.ord),
                                min(rel.child_oid::regclass::text),
                                string_agg(format('LEFT JOIN %s %s ON %s.%I = c.%I',
                                                  rel.parent_oid::regclass, rel.alias, rel.alias,
                                                  rel.parent_col, rel.child_col),
                                           ' ' ORDER BY rel.ord))
               END,
               false, true, '') AS x,
           array_agg(rel.check_name ORDER BY rel.ord) AS check_names,
           array_agg(rel.alias ORDER BY rel.ord) AS aliases,
           array_agg(rel.detail ORDER BY rel.ord) AS details
    FROM (
        SELECT l.*,
               'r' || row_number() OVER (ORDER BY l.child, l.child_col) AS alias,
               row_number() OVER (ORDER BY l.child, l.child_col) AS ord,
               format('orphan rows public.%s.%s', l.child, l.child_col) AS check_name,
               format('public.%s.%s%s -> public.%s.%s (no foreign key constraint): count of %s rows that reference'
                      ' a missing %s row',
                      l.child, l.child_col, CASE WHEN l.is_array THEN '[]' ELSE '' END, l.parent, l.parent_col,
                      l.child, l.parent) AS detail,
               CASE WHEN l.is_array THEN l.child || '.' || l.child_col ELSE l.child END AS pass
        FROM (
            SELECT v.child, v.child_col, v.parent, v.parent_col, o.child_oid, o.parent_oid,
                   ca.atttypid = pt.typarray AS is_array
            FROM (VALUES
                ('organizations', 'created_by', 'users', 'id'),
                ('organizations', 'updated_by', 'users', 'id'),
                ('organizations', 'deleted_by', 'users', 'id'),
                ('branches', 'organization_id', 'organizations', 'id'),
                ('branches', 'created_by', 'users', 'id'),
                ('branches', 'updated_by', 'users', 'id'),
                ('branches', 'deleted_by', 'users', 'id'),
                ('users', 'organization_id', 'organizations', 'id'),
                ('users', 'branch_ids', 'branches', 'id'),
                ('users', 'created_by', 'users', 'id'),
                ('users', 'updated_by', 'users', 'id'),
                ('users', 'deleted_by', 'users', 'id'),
                ('clients', 'organization_id', 'organizations', 'id'),
                ('clients', 'branch_id', 'branches', 'id'),
                ('clients', 'coordinator_id', 'users', 'id'),
                ('clients', 'created_by', 'users', 'id'),
                ('clients', 'updated_by', 'users', 'id'),
                ('clients', 'deleted_by', 'users', 'id'),
                ('caregivers', 'organization_id', 'organizations', 'id'),
                ('caregivers', 'primary_branch_id', 'branches', 'id'),
                ('caregivers', 'branch_ids', 'branches', 'id'),
                ('caregivers', 'supervisor_id', 'caregivers', 'id'),
                ('caregivers', 'created_by', 'users', 'id'),
                ('caregivers', 'updated_by', 'users', 'id'),
                ('caregivers', 'deleted_by', 'users', 'id'),
                ('visits', 'organization_id', 'organizations', 'id'),
                ('visits', 'branch_id', 'branches', 'id'),
                ('visits', 'client_id', 'clients', 'id'),
                ('visits', 'caregiver_id', 'caregivers', 'id'),
                ('visits', 'created_by', 'users', 'id'),
                ('visits', 'updated_by', 'users', 'id'),
                ('visits', 'deleted_by', 'users', 'id'),
                ('evv_records', 'visit_id', 'visits', 'id'),
                ('evv_records', 'organization_id', 'organizations', 'id'),
                ('evv_records', 'branch_id', 'branches', 'id'),
                ('evv_records', 'client_id', 'clients', 'id'),
                ('evv_records', 'caregiver_id', 'caregivers', 'id'),
                ('evv_records', 'created_by', 'users', 'id'),
                ('evv_records', 'updated_by', 'users', 'id'),
                ('evv_revisions', 'evv_record_id', 'evv_records', 'id'),
                ('evv_revisions', 'revised_by', 'users', 'id'),
                ('evv_revisions', 'created_by', 'users', 'id'),
                ('evv_revisions', 'updated_by', 'users', 'id'),
                ('care_plans', 'organization_id', 'organizations', 'id'),
                ('care_plans', 'client_id', 'clients', 'id'),
                ('care_plans', 'coordinator_id', 'users', 'id'),
                ('care_plans', 'approved_by', 'users', 'id'),
                ('care_plans', 'created_by', 'users', 'id'),
                ('care_plans', 'updated_by', 'users', 'id'),
                ('care_plans', 'deleted_by', 'users', 'id'),
                ('certifications', 'caregiver_id', 'caregivers', 'id'),
                ('certifications', 'organization_id', 'organizations', 'id'),
                ('certifications', 'verified_by', 'users', 'id'),
                ('certifications', 'created_by', 'users', 'id'),
                ('certifications', 'updated_by', 'users', 'id'),
                ('certifications', 'deleted_by', 'users', 'id'),
                ('family_members', 'client_id', 'clients', 'id'),
                ('family_members', 'organization_id', 'organizations', 'id'),
                ('family_members', 'created_by', 'users', 'id'),
                ('family_members', 'updated_by', 'users', 'id'),
                ('family_members', 'deleted_by', 'users', 'id'),
                ('billing_invoices', 'organization_id', 'organizations', 'id'),
                ('billing_invoices', 'branch_id', 'branches', 'id'),
                ('billing_invoices', 'client_id', 'clients', 'id'),
                ('billing_invoices', 'visit_ids', 'visits', 'id'),
                ('billing_invoices', 'created_by', 'users', 'id'),
                ('billing_invoices', 'updated_by', 'users', 'id'),
                ('billing_invoices', 'deleted_by', 'users', 'id'),
                ('audit_events', 'user_id', 'users', 'id'),
                ('audit_events', 'organization_id', 'organizations', 'id')
            ) AS v(child, child_col, parent, parent_col)
            CROSS JOIN LATERAL (
                SELECT to_regclass(format('public.%I', v.child)) AS child_oid,
                       to_regclass(format('public.%I', v.parent)) AS parent_oid
            ) o
            JOIN pg_attribute ca ON ca.attrelid = o.child_oid AND ca.attname = v.child_col
                                AND ca.attnum > 0 AND NOT ca.attisdropped
            JOIN pg_attribute pa ON pa.attrelid = o.parent_oid AND pa.attname = v.parent_col
                                AND pa.attnum > 0 AND NOT pa.attisdropped
            JOIN pg_type pt ON pt.oid = pa.atttypid
            WHERE (ca.atttypid = pa.atttypid OR ca.atttypid = pt.typarray)
              -- enforced by a foreign key: foreign_keys_hold.sql covers it
              AND NOT EXISTS (
                  SELECT 1 FROM pg_constraint con
                  WHERE con.contype = 'f' AND con.conrelid = o.child_oid AND con.confrelid = o.parent_oid
                    AND con.conkey = ARRAY[ca.attnum] AND con.confkey = ARRAY[pa.attnum])
        ) l
    ) rel
    GROUP BY rel.pass
) g
CROSS JOIN LATERAL unnest(g.check_names, g.aliases, g.details) AS r(check_name, alias, detail)
ORDER BY 1;
