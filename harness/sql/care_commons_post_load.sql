-- Run after the bulk load, as the application role: foreign keys (validated in
-- one pass each, far faster than row-by-row checks during the load), secondary
-- indexes (B-tree, GIN on jsonb and arrays) and grants.

-- Foreign keys ---------------------------------------------------------------
ALTER TABLE branches ADD CONSTRAINT branches_organization_id_foreign
    FOREIGN KEY (organization_id) REFERENCES organizations (id);
ALTER TABLE users ADD CONSTRAINT users_organization_id_foreign
    FOREIGN KEY (organization_id) REFERENCES organizations (id);

ALTER TABLE clients ADD CONSTRAINT clients_organization_id_foreign
    FOREIGN KEY (organization_id) REFERENCES organizations (id);
ALTER TABLE clients ADD CONSTRAINT clients_branch_id_foreign
    FOREIGN KEY (branch_id) REFERENCES branches (id);
ALTER TABLE clients ADD CONSTRAINT clients_coordinator_id_foreign
    FOREIGN KEY (coordinator_id) REFERENCES users (id);
ALTER TABLE clients ADD CONSTRAINT clients_created_by_foreign
    FOREIGN KEY (created_by) REFERENCES users (id);

ALTER TABLE caregivers ADD CONSTRAINT caregivers_organization_id_foreign
    FOREIGN KEY (organization_id) REFERENCES organizations (id);
ALTER TABLE caregivers ADD CONSTRAINT caregivers_primary_branch_id_foreign
    FOREIGN KEY (primary_branch_id) REFERENCES branches (id);
ALTER TABLE caregivers ADD CONSTRAINT caregivers_supervisor_id_foreign
    FOREIGN KEY (supervisor_id) REFERENCES caregivers (id);

ALTER TABLE visits ADD CONSTRAINT visits_organization_id_foreign
    FOREIGN KEY (organization_id) REFERENCES organizations (id);
ALTER TABLE visits ADD CONSTRAINT visits_branch_id_foreign
    FOREIGN KEY (branch_id) REFERENCES branches (id);
ALTER TABLE visits ADD CONSTRAINT visits_client_id_foreign
    FOREIGN KEY (client_id) REFERENCES clients (id);
ALTER TABLE visits ADD CONSTRAINT visits_caregiver_id_foreign
    FOREIGN KEY (caregiver_id) REFERENCES caregivers (id);

ALTER TABLE evv_records ADD CONSTRAINT evv_records_visit_id_foreign
    FOREIGN KEY (visit_id) REFERENCES visits (id);
ALTER TABLE evv_records ADD CONSTRAINT evv_records_client_id_foreign
    FOREIGN KEY (client_id) REFERENCES clients (id);
ALTER TABLE evv_records ADD CONSTRAINT evv_records_caregiver_id_foreign
    FOREIGN KEY (caregiver_id) REFERENCES caregivers (id);

ALTER TABLE evv_revisions ADD CONSTRAINT evv_revisions_evv_record_id_foreign
    FOREIGN KEY (evv_record_id) REFERENCES evv_records (id) ON DELETE CASCADE;

ALTER TABLE care_plans ADD CONSTRAINT care_plans_client_id_foreign
    FOREIGN KEY (client_id) REFERENCES clients (id);
ALTER TABLE care_plans ADD CONSTRAINT care_plans_coordinator_id_foreign
    FOREIGN KEY (coordinator_id) REFERENCES users (id);
ALTER TABLE care_plans ADD CONSTRAINT care_plans_approved_by_foreign
    FOREIGN KEY (approved_by) REFERENCES users (id);

ALTER TABLE certifications ADD CONSTRAINT certifications_caregiver_id_foreign
    FOREIGN KEY (caregiver_id) REFERENCES caregivers (id) ON DELETE CASCADE;
ALTER TABLE family_members ADD CONSTRAINT family_members_client_id_foreign
    FOREIGN KEY (client_id) REFERENCES clients (id) ON DELETE CASCADE;

ALTER TABLE billing_invoices ADD CONSTRAINT billing_invoices_organization_id_foreign
    FOREIGN KEY (organization_id) REFERENCES organizations (id);
ALTER TABLE billing_invoices ADD CONSTRAINT billing_invoices_client_id_foreign
    FOREIGN KEY (client_id) REFERENCES clients (id);

-- Secondary indexes ------------------------------------------------------------
CREATE INDEX branches_organization_id_index ON branches (organization_id);
CREATE INDEX users_organization_id_index ON users (organization_id);
CREATE INDEX users_roles_gin ON users USING gin (roles);

CREATE INDEX clients_organization_id_status_index ON clients (organization_id, status);
CREATE INDEX clients_branch_id_index ON clients (branch_id);
CREATE INDEX clients_last_name_first_name_index ON clients (last_name, first_name);
CREATE INDEX clients_deleted_at_index ON clients (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX clients_primary_address_gin ON clients USING gin (primary_address jsonb_path_ops);

CREATE INDEX caregivers_organization_id_status_index ON caregivers (organization_id, status);
CREATE INDEX caregivers_branch_ids_gin ON caregivers USING gin (branch_ids);
CREATE INDEX caregivers_credentials_gin ON caregivers USING gin (credentials);

CREATE INDEX visits_organization_id_scheduled_date_index ON visits (organization_id, scheduled_date);
CREATE INDEX visits_client_id_scheduled_date_index ON visits (client_id, scheduled_date);
CREATE INDEX visits_caregiver_id_scheduled_date_index ON visits (caregiver_id, scheduled_date);
CREATE INDEX visits_status_index ON visits (status);
CREATE INDEX visits_deleted_at_index ON visits (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX visits_tags_gin ON visits USING gin (tags);

CREATE INDEX evv_records_service_date_index ON evv_records (service_date);
CREATE INDEX evv_records_caregiver_id_service_date_index ON evv_records (caregiver_id, service_date);
CREATE INDEX evv_records_client_id_index ON evv_records (client_id);
CREATE INDEX evv_records_compliance_flags_gin ON evv_records USING gin (compliance_flags);

CREATE INDEX evv_revisions_revised_at_index ON evv_revisions (revised_at);

CREATE INDEX care_plans_client_id_index ON care_plans (client_id);
CREATE INDEX care_plans_organization_id_status_index ON care_plans (organization_id, status);

CREATE INDEX certifications_caregiver_id_index ON certifications (caregiver_id);
CREATE INDEX certifications_expiration_date_index ON certifications (expiration_date);

CREATE INDEX family_members_client_id_index ON family_members (client_id);

CREATE INDEX billing_invoices_client_id_period_index ON billing_invoices (client_id, billing_period_start);
CREATE INDEX billing_invoices_status_index ON billing_invoices (organization_id, status);

CREATE INDEX audit_events_timestamp_index ON audit_events ("timestamp");
CREATE INDEX audit_events_organization_id_timestamp_index ON audit_events (organization_id, "timestamp");

-- Grants -----------------------------------------------------------------------
-- The read-only group role (NOLOGIN) may read everything; no role is made a
-- member of it here. Default privileges make future tables readable too (they
-- live in pg_default_acl and travel with pg_dump, unlike the roles themselves).
GRANT USAGE ON SCHEMA public TO care_commons_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO care_commons_readonly;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO care_commons_readonly;
ALTER DEFAULT PRIVILEGES FOR ROLE care_commons_app IN SCHEMA public
    GRANT SELECT ON TABLES TO care_commons_readonly;
