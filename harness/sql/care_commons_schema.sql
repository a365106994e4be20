-- Synthetic care-commons schema (a realistic subset of the real 105-table schema).
--
-- Run as the application role (care_commons_app), which owns the database, so that
-- every object below is owned by it, exactly as when knex migrations run in
-- production. uuid-ossp and pgcrypto are trusted extensions (PostgreSQL >= 13),
-- so the database owner may create them.
--
-- Conventions mirrored from the real schema:
--   * UUID primary keys: older tables default to uuid_generate_v4() (uuid-ossp),
--     newer ones to gen_random_uuid() (pgcrypto). The only serial key is knex's own.
--   * timestamptz everywhere, varchar(n) short strings, no enum types:
--     status columns are text with CHECK (status IN (...)).
--   * audit columns created_at/created_by/updated_at/updated_by/version and a
--     BEFORE UPDATE trigger setting updated_at (and bumping version on EVV tables)
--     on every table but knex_migrations and the append-only audit_events.
--   * soft delete (deleted_at/deleted_by) on domain tables; EVV and audit tables
--     are immutable / append-only and have none.
--
-- Tables (with primary keys, UNIQUE and CHECK constraints) and triggers live
-- here; foreign keys, secondary indexes and grants are added after the bulk load
-- by care_commons_post_load.sql (much faster at large scales), row-level
-- security by care_commons_rls.sql.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- knex bookkeeping (the only serial key in the schema)
CREATE TABLE knex_migrations (
    id serial PRIMARY KEY,
    name varchar(255),
    batch integer,
    migration_time timestamptz
);

CREATE TABLE organizations (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name varchar(200) NOT NULL,
    legal_name varchar(255),
    tax_id varchar(20),
    npi varchar(10),
    medicaid_provider_id varchar(30),
    phone varchar(20),
    email varchar(255),
    website varchar(255),
    primary_address jsonb NOT NULL,
    billing_address jsonb,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    state_code char(2) NOT NULL,
    timezone varchar(50) NOT NULL DEFAULT 'America/New_York',
    status text NOT NULL DEFAULT 'ACTIVE'
        CHECK (status IN ('ACTIVE', 'INACTIVE', 'SUSPENDED', 'PENDING_APPROVAL')),
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

CREATE TABLE branches (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    organization_id uuid NOT NULL,
    name varchar(200) NOT NULL,
    code varchar(20) NOT NULL,
    phone varchar(20),
    email varchar(255),
    address jsonb NOT NULL,
    service_area jsonb,
    operating_hours jsonb,
    status text NOT NULL DEFAULT 'ACTIVE'
        CHECK (status IN ('ACTIVE', 'INACTIVE', 'CLOSED')),
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid,
    CONSTRAINT branches_organization_code_unique UNIQUE (organization_id, code)
);

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    organization_id uuid NOT NULL,
    username varchar(100) NOT NULL UNIQUE,
    email varchar(255) NOT NULL UNIQUE,
    password_hash varchar(255) NOT NULL,
    first_name varchar(100) NOT NULL,
    last_name varchar(100) NOT NULL,
    phone varchar(20),
    roles varchar(50)[] NOT NULL DEFAULT '{}',
    permissions text[] NOT NULL DEFAULT '{}',
    branch_ids uuid[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'ACTIVE'
        CHECK (status IN ('ACTIVE', 'INACTIVE', 'LOCKED', 'PENDING_VERIFICATION', 'SUSPENDED')),
    last_login_at timestamptz,
    last_login_ip inet,
    failed_login_attempts integer NOT NULL DEFAULT 0,
    mfa_enabled boolean NOT NULL DEFAULT false,
    mfa_secret text,
    password_changed_at timestamptz,
    preferences jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

-- PHI
CREATE TABLE clients (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    organization_id uuid NOT NULL,
    branch_id uuid NOT NULL,
    client_number varchar(50) NOT NULL UNIQUE,
    first_name varchar(100) NOT NULL,
    middle_name varchar(100),
    last_name varchar(100) NOT NULL,
    preferred_name varchar(100),
    date_of_birth date NOT NULL,
    gender varchar(20),
    ssn text,
    primary_phone varchar(20),
    email varchar(255),
    primary_address jsonb NOT NULL,
    emergency_contacts jsonb[] NOT NULL DEFAULT '{}',
    insurance jsonb,
    allergies jsonb NOT NULL DEFAULT '[]'::jsonb,
    medical_record_number varchar(50),
    primary_physician jsonb,
    preferred_language varchar(50) DEFAULT 'English',
    risk_flags varchar(50)[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'PENDING_INTAKE'
        CHECK (status IN ('INQUIRY', 'PENDING_INTAKE', 'ACTIVE', 'ON_HOLD', 'INACTIVE', 'DISCHARGED', 'DECEASED')),
    intake_date date,
    discharge_date date,
    discharge_reason text,
    coordinator_id uuid,
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

-- PII
CREATE TABLE caregivers (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    organization_id uuid NOT NULL,
    primary_branch_id uuid NOT NULL,
    branch_ids uuid[] NOT NULL DEFAULT '{}',
    employee_number varchar(50) NOT NULL UNIQUE,
    first_name varchar(100) NOT NULL,
    last_name varchar(100) NOT NULL,
    date_of_birth date,
    ssn text,
    email varchar(255) NOT NULL UNIQUE,
    phone varchar(20),
    address jsonb,
    credentials jsonb NOT NULL DEFAULT '[]'::jsonb,
    payroll_info jsonb,
    skills varchar(50)[] NOT NULL DEFAULT '{}',
    languages varchar(50)[] NOT NULL DEFAULT '{English}',
    hire_date date,
    termination_date date,
    pay_rate numeric(8,2),
    max_hours_per_week numeric(5,2),
    supervisor_id uuid,
    status text NOT NULL DEFAULT 'APPLICANT'
        CHECK (status IN ('APPLICANT', 'ONBOARDING', 'ACTIVE', 'INACTIVE', 'ON_LEAVE', 'SUSPENDED', 'TERMINATED')),
    compliance_status text NOT NULL DEFAULT 'PENDING'
        CHECK (compliance_status IN ('COMPLIANT', 'PENDING', 'EXPIRING_SOON', 'NON_COMPLIANT')),
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

CREATE TABLE visits (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    organization_id uuid NOT NULL,
    branch_id uuid NOT NULL,
    client_id uuid NOT NULL,
    caregiver_id uuid,
    visit_number varchar(50) NOT NULL UNIQUE,
    visit_type varchar(50) NOT NULL,
    service_type_code varchar(20),
    scheduled_date date NOT NULL,
    scheduled_start_time time NOT NULL,
    scheduled_end_time time NOT NULL,
    scheduled_duration integer NOT NULL,
    actual_start_time timestamptz,
    actual_end_time timestamptz,
    actual_duration integer,
    status text NOT NULL DEFAULT 'SCHEDULED'
        CHECK (status IN ('DRAFT', 'SCHEDULED', 'UNASSIGNED', 'ASSIGNED', 'CONFIRMED', 'EN_ROUTE',
                          'ARRIVED', 'IN_PROGRESS', 'PAUSED', 'COMPLETED', 'INCOMPLETE', 'CANCELLED',
                          'NO_SHOW_CLIENT', 'NO_SHOW_CAREGIVER', 'REJECTED')),
    status_history jsonb NOT NULL DEFAULT '[]'::jsonb,
    address jsonb NOT NULL,
    verification_data jsonb,
    billable_hours numeric(5,2),
    notes text,
    cancellation_reason text,
    tags text[] NOT NULL DEFAULT '{}',
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

-- Electronic visit verification: immutable, no soft delete.
CREATE TABLE evv_records (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    visit_id uuid NOT NULL UNIQUE,
    organization_id uuid NOT NULL,
    branch_id uuid NOT NULL,
    client_id uuid NOT NULL,
    caregiver_id uuid NOT NULL,
    service_type_code varchar(20),
    service_date date NOT NULL,
    clock_in_time timestamptz NOT NULL,
    clock_out_time timestamptz,
    total_duration integer,
    clock_in_location jsonb,
    clock_out_location jsonb,
    verification_method varchar(30) NOT NULL
        CHECK (verification_method IN ('GPS', 'TELEPHONY', 'FACIAL', 'BIOMETRIC', 'MANUAL')),
    compliance_flags jsonb NOT NULL DEFAULT '[]'::jsonb,
    record_status text NOT NULL DEFAULT 'PENDING'
        CHECK (record_status IN ('PENDING', 'COMPLETE', 'VERIFIED', 'SUBMITTED', 'ACCEPTED', 'REJECTED', 'AMENDED')),
    submitted_to_aggregator_at timestamptz,
    aggregator_confirmation varchar(100),
    device_info jsonb,
    integrity_hash varchar(64) NOT NULL,
    recorded_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1
);

-- Append-only hash chain of every change to an EVV record.
CREATE TABLE evv_revisions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    evv_record_id uuid NOT NULL,
    revision_number integer NOT NULL,
    revision_type varchar(30) NOT NULL
        CHECK (revision_type IN ('CREATE', 'CLOCK_OUT', 'CORRECTION', 'AMENDMENT', 'SUBMISSION')),
    changed_fields text[] NOT NULL DEFAULT '{}',
    previous_values jsonb,
    new_values jsonb NOT NULL,
    reason text,
    revised_by uuid,
    revised_at timestamptz NOT NULL,
    revision_hash varchar(64) NOT NULL,
    previous_revision_hash varchar(64),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    CONSTRAINT evv_revisions_record_revision_unique UNIQUE (evv_record_id, revision_number)
);

-- PHI
CREATE TABLE care_plans (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_number varchar(50) NOT NULL UNIQUE,
    organization_id uuid NOT NULL,
    client_id uuid NOT NULL,
    name varchar(255) NOT NULL,
    plan_type varchar(50) NOT NULL,
    status text NOT NULL DEFAULT 'DRAFT'
        CHECK (status IN ('DRAFT', 'PENDING_APPROVAL', 'ACTIVE', 'ON_HOLD', 'EXPIRED', 'DISCONTINUED', 'COMPLETED')),
    medical_diagnosis text[] NOT NULL DEFAULT '{}',
    goals jsonb NOT NULL DEFAULT '[]'::jsonb,
    interventions jsonb NOT NULL DEFAULT '[]'::jsonb,
    frequency jsonb,
    effective_date date NOT NULL,
    expiration_date date,
    review_date date,
    coordinator_id uuid,
    approved_by uuid,
    approved_at timestamptz,
    notes text,
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

CREATE TABLE certifications (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    caregiver_id uuid NOT NULL,
    organization_id uuid NOT NULL,
    certification_type varchar(50) NOT NULL,
    certification_number varchar(100),
    issuing_authority varchar(200),
    issued_date date,
    expiration_date date,
    status text NOT NULL DEFAULT 'PENDING_VERIFICATION'
        CHECK (status IN ('ACTIVE', 'EXPIRING_SOON', 'EXPIRED', 'PENDING_VERIFICATION', 'REVOKED')),
    verified_by uuid,
    verified_at timestamptz,
    document_url text,
    document_hash varchar(64),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

CREATE TABLE family_members (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    organization_id uuid NOT NULL,
    first_name varchar(100) NOT NULL,
    last_name varchar(100) NOT NULL,
    relationship varchar(50) NOT NULL,
    email varchar(255),
    phone varchar(20),
    address jsonb,
    is_primary_contact boolean NOT NULL DEFAULT false,
    is_emergency_contact boolean NOT NULL DEFAULT false,
    has_portal_access boolean NOT NULL DEFAULT false,
    portal_last_login_at timestamptz,
    notification_preferences jsonb NOT NULL DEFAULT '{}'::jsonb,
    permissions varchar(50)[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'ACTIVE'
        CHECK (status IN ('ACTIVE', 'INACTIVE', 'PENDING_INVITE', 'REVOKED')),
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

CREATE TABLE billing_invoices (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_number varchar(50) NOT NULL UNIQUE,
    organization_id uuid NOT NULL,
    branch_id uuid NOT NULL,
    client_id uuid NOT NULL,
    billing_period_start date NOT NULL,
    billing_period_end date NOT NULL,
    payer_type varchar(30) NOT NULL
        CHECK (payer_type IN ('MEDICAID', 'MEDICARE', 'PRIVATE_INSURANCE', 'PRIVATE_PAY', 'VA', 'LONG_TERM_CARE')),
    payer_name varchar(200),
    visit_ids uuid[] NOT NULL DEFAULT '{}',
    line_items jsonb NOT NULL DEFAULT '[]'::jsonb,
    total_hours numeric(8,2) NOT NULL DEFAULT 0,
    subtotal numeric(12,2) NOT NULL DEFAULT 0,
    adjustments numeric(12,2) NOT NULL DEFAULT 0,
    total_amount numeric(12,2) NOT NULL DEFAULT 0,
    amount_paid numeric(12,2) NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'DRAFT'
        CHECK (status IN ('DRAFT', 'PENDING', 'SUBMITTED', 'PAID', 'PARTIALLY_PAID', 'DENIED', 'VOID')),
    due_date date,
    submitted_at timestamptz,
    paid_at timestamptz,
    claim_number varchar(50),
    is_demo_data boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    version integer NOT NULL DEFAULT 1,
    deleted_at timestamptz,
    deleted_by uuid
);

-- Append-only by convention only (no trigger, no soft delete, no FKs).
CREATE TABLE audit_events (
    event_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    user_id uuid,
    organization_id uuid,
    event_type varchar(50) NOT NULL,
    resource varchar(100) NOT NULL,
    resource_id uuid,
    action varchar(50) NOT NULL,
    result varchar(20) NOT NULL CHECK (result IN ('SUCCESS', 'FAILURE', 'DENIED')),
    metadata jsonb,
    ip_address inet,
    user_agent text
);

-- updated_at / version maintenance ------------------------------------------

CREATE FUNCTION update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

-- EVV tables also bump the optimistic-locking version on every change.
CREATE FUNCTION update_evv_updated_at_and_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    NEW.version = COALESCE(OLD.version, 0) + 1;
    RETURN NEW;
END;
$$;

CREATE TRIGGER update_organizations_updated_at BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_branches_updated_at BEFORE UPDATE ON branches
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_clients_updated_at BEFORE UPDATE ON clients
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_caregivers_updated_at BEFORE UPDATE ON caregivers
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_visits_updated_at BEFORE UPDATE ON visits
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_care_plans_updated_at BEFORE UPDATE ON care_plans
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_certifications_updated_at BEFORE UPDATE ON certifications
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_family_members_updated_at BEFORE UPDATE ON family_members
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_billing_invoices_updated_at BEFORE UPDATE ON billing_invoices
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_evv_records_updated_at BEFORE UPDATE ON evv_records
    FOR EACH ROW EXECUTE FUNCTION update_evv_updated_at_and_version();
CREATE TRIGGER update_evv_revisions_updated_at BEFORE UPDATE ON evv_revisions
    FOR EACH ROW EXECUTE FUNCTION update_evv_updated_at_and_version();
