-- Row-level security, kept in its own file as in the real project. Policies are
-- keyed on the session setting app.current_organization_id, set by the
-- application per request. ENABLE (not FORCE): the owning application role and
-- superusers bypass the policies; every other role without BYPASSRLS sees only
-- the rows of the organization named in the setting, and none when it is unset.
-- A backup taken by such a role misses rows: plain pg_dump (row_security=off)
-- fails on these tables, pg_dump --enable-row-security and COPY/SELECT-based
-- exports silently return only the visible rows.

ALTER TABLE clients ENABLE ROW LEVEL SECURITY;
CREATE POLICY clients_organization_isolation ON clients
    USING (organization_id = NULLIF(current_setting('app.current_organization_id', true), '')::uuid);

ALTER TABLE caregivers ENABLE ROW LEVEL SECURITY;
CREATE POLICY caregivers_organization_isolation ON caregivers
    USING (organization_id = NULLIF(current_setting('app.current_organization_id', true), '')::uuid);

ALTER TABLE visits ENABLE ROW LEVEL SECURITY;
CREATE POLICY visits_organization_isolation ON visits
    USING (organization_id = NULLIF(current_setting('app.current_organization_id', true), '')::uuid);

ALTER TABLE care_plans ENABLE ROW LEVEL SECURITY;
CREATE POLICY care_plans_organization_isolation ON care_plans
    USING (organization_id = NULLIF(current_setting('app.current_organization_id', true), '')::uuid);
