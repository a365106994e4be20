-- Synthetic care-commons data, generated server-side with INSERT ... SELECT.
--
-- harness/synthetic.py splits this file on the "-- step:" markers, calls
-- setseed() with a value derived from (seed, step) before each step and binds the
-- parameters (pyformat placeholders; no bare percent sign may appear here):
--   seed, anchor (today, 'YYYY-MM-DD'), span (days of history), n_orgs, n_branches,
--   n_users, n_clients, n_caregivers, n_visits, n_care_plans, n_certifications,
--   n_family_members, n_audit_events.
-- Determinism: every random() call is evaluated over an ordered stream (a
-- generate_series, or a sorted subquery fenced with OFFSET 0), never after a join.
-- Identifiers and strings come from keyed hashes of (seed, kind, key), see the helpers.

-- step: knex_migrations
INSERT INTO knex_migrations (name, batch, migration_time)
SELECT to_char(t, 'YYYYMMDDHH24MISS') || '_' || m.name || '.ts', 1 + (m.ord - 1) / 3, t
FROM unnest(ARRAY[
    'create_organizations', 'create_branches', 'create_users', 'create_clients', 'create_caregivers',
    'create_visits', 'create_care_plans', 'create_evv_records', 'create_audit_events',
    'add_updated_at_triggers', 'add_soft_delete_columns', 'add_client_emergency_contacts',
    'create_certifications', 'create_family_members', 'add_visit_status_history', 'add_user_roles_array',
    'create_billing_invoices', 'create_service_authorizations', 'create_medications',
    'create_medication_administrations', 'add_evv_integrity_hash', 'create_evv_revisions',
    'add_visit_tags', 'add_caregiver_credentials_gin', 'create_client_documents', 'create_incident_reports',
    'create_messages', 'create_notifications', 'create_shift_templates', 'create_training_records',
    'create_mileage_logs', 'add_client_risk_flags', 'create_family_portal_sessions', 'create_payments',
    'create_claims', 'add_invoice_line_items', 'create_quality_assessments', 'create_referrals',
    'create_caregiver_availability', 'add_visit_verification_data', 'add_audit_events_indexes',
    'add_pgcrypto_extension', 'create_payroll_periods', 'add_branch_service_area', 'add_demo_data_flags',
    'add_row_level_security', 'add_evv_version_trigger'
]) WITH ORDINALITY AS m(name, ord),
LATERAL (SELECT (%(anchor)s::date - %(span)s - 60 + ((m.ord - 1) * (%(span)s + 30) / 47)::integer)::timestamptz
                + pg_temp.hint('km' || m.ord, 50000) * interval '1 second' AS t) x
ORDER BY m.ord;

-- step: organizations
INSERT INTO organizations (id, name, legal_name, tax_id, npi, medicaid_provider_id, phone, email, website,
    primary_address, billing_address, settings, state_code, timezone, status, is_demo_data,
    created_at, created_by, updated_at, updated_by, version)
SELECT pg_temp.uidn('org', o),
       pg_temp.org_name(o),
       pg_temp.org_name(o) || ', LLC',
       pg_temp.digits('tax' || o, 2) || '-' || pg_temp.digits('tax2' || o, 7),
       '1' || pg_temp.digits('npi' || o, 9),
       (pg_temp.city_states())[c] || pg_temp.digits('mpi' || o, 9),
       pg_temp.phone('org' || o),
       'admin@' || pg_temp.org_domain(o),
       'https://www.' || pg_temp.org_domain(o),
       pg_temp.address(c, 'org' || o),
       CASE WHEN mod(o, 2) = 0 THEN pg_temp.address(c, 'orgbill' || o) END,
       jsonb_build_object(
           'evv', jsonb_build_object(
               'aggregator', (ARRAY['Sandata', 'HHAeXchange', 'Tellus', 'AuthentiCare'])[1 + mod(o, 4)],
               'aggregator_account', upper(pg_temp.hex('agg' || o, 12)),
               'geofence_radius_m', 100 + 50 * mod(o, 3),
               'grace_period_minutes', 7 + 4 * mod(o, 3),
               'require_client_signature', mod(o, 2) = 0),
           'billing', jsonb_build_object('invoice_day', 1 + mod(o, 28), 'payment_terms_days', 30,
               'default_rate', 26.5 + o, 'currency', 'USD',
               'clearinghouse_id', 'CH' || pg_temp.digits('ch' || o, 8)),
           'scheduling', jsonb_build_object('min_visit_minutes', 60, 'max_shift_hours', 12,
               'overtime_threshold_hours', 40, 'auto_assign', mod(o, 3) = 0),
           'security', jsonb_build_object('mfa_required', mod(o, 2) = 1, 'session_timeout_minutes', 30,
               'password_rotation_days', 90, 'ip_allowlist', jsonb_build_array(
                   host('10.0.0.0'::inet + pg_temp.hint('ipa' || o, 16000000)) || '/24')),
           'features', jsonb_build_object('family_portal', true, 'telehealth', mod(o, 3) = 0,
               'ai_scheduling', mod(o, 4) = 0, 'payroll_export', true),
           'branding', jsonb_build_object('primary_color', '#' || pg_temp.hex('col' || o, 6),
               'logo_url', 'https://cdn.' || pg_temp.org_domain(o) || '/logo-' || pg_temp.hex('logo' || o, 12) || '.png'),
           'api_keys', jsonb_build_array(jsonb_build_object('id', pg_temp.uidn('apikey', o),
               'prefix', 'cc_live_' || pg_temp.hex('akp' || o, 8), 'hash', pg_temp.hex('akh' || o, 64)))),
       (pg_temp.city_states())[c],
       (pg_temp.city_tz())[c],
       'ACTIVE', false,
       created, NULL,
       %(anchor)s::date - (1 + pg_temp.hint('oupd' || o, 200)) + interval '9 hours',
       pg_temp.uidn('user', o),
       2 + pg_temp.hint('over' || o, 12)
FROM generate_series(1, %(n_orgs)s) o,
LATERAL (SELECT pg_temp.city_of_org(o) AS c,
                (%(anchor)s::date - %(span)s - 45 + 7 * mod(o - 1, 6))::timestamptz
                    + pg_temp.hint('oc' || o, 40000) * interval '1 second' AS created) x
ORDER BY o;

-- step: branches
INSERT INTO branches (id, organization_id, name, code, phone, email, address, service_area, operating_hours,
    status, is_demo_data, created_at, created_by, updated_at, updated_by, version)
SELECT pg_temp.uidn('branch', j),
       pg_temp.uidn('org', o),
       (pg_temp.city_names())[c] || ' '
           || (ARRAY['Central', 'North', 'South', 'East', 'West', 'Downtown', 'Metro', 'Valley', 'Lakeside',
                     'Riverside'])[1 + mod((j - 1) / %(n_orgs)s, 10)]
           || CASE WHEN (j - 1) / %(n_orgs)s >= 10 THEN ' ' || ((j - 1) / %(n_orgs)s / 10 + 1)::text ELSE '' END,
       'BR-' || pg_temp.pad(j, 4),
       pg_temp.phone('br' || j),
       'branch' || j || '@' || pg_temp.org_domain(o),
       pg_temp.address(c, 'br' || j),
       jsonb_build_object('radius_miles', 15 + 5 * mod(j, 4),
           'zip_codes', to_jsonb(ARRAY[(pg_temp.city_zips())[c] || lpad(pg_temp.hint('z1' || j, 100)::text, 2, '0'),
                                       (pg_temp.city_zips())[c] || lpad(pg_temp.hint('z2' || j, 100)::text, 2, '0'),
                                       (pg_temp.city_zips())[c] || lpad(pg_temp.hint('z3' || j, 100)::text, 2, '0')]),
           'max_travel_minutes', 30 + 15 * mod(j, 3)),
       jsonb_build_object('mon', '08:00-17:00', 'tue', '08:00-17:00', 'wed', '08:00-17:00',
           'thu', '08:00-17:00', 'fri', '08:00-17:00',
           'sat', CASE WHEN mod(j, 3) = 0 THEN '09:00-13:00' END, 'sun', NULL,
           'on_call_phone', pg_temp.phone('oncall' || j)),
       CASE WHEN j > %(n_orgs)s AND mod(j, 17) = 0 THEN 'INACTIVE' ELSE 'ACTIVE' END,
       false,
       created, NULL,
       least(%(anchor)s::timestamptz - interval '3 hours', created + (1 + pg_temp.hint('bupd' || j, 900)) * interval '1 day'),
       pg_temp.uidn('user', o),
       1 + pg_temp.hint('bver' || j, 6)
FROM generate_series(1, %(n_branches)s) j,
LATERAL (SELECT pg_temp.org_of_branch(j) AS o) x1,
LATERAL (SELECT pg_temp.city_of_org(x1.o) AS c,
                (%(anchor)s::date - %(span)s - 30 + 11 * ((j - 1) / %(n_orgs)s))::timestamptz
                    + pg_temp.hint('bc' || j, 40000) * interval '1 second' AS created) x2
ORDER BY j;

-- step: users
INSERT INTO users (id, organization_id, username, email, password_hash, first_name, last_name, phone, roles,
    permissions, branch_ids, status, last_login_at, last_login_ip, failed_login_attempts, mfa_enabled,
    mfa_secret, password_changed_at, preferences, is_demo_data, created_at, created_by, updated_at,
    updated_by, version, deleted_at, deleted_by)
SELECT pg_temp.uidn('user', u),
       pg_temp.uidn('org', o),
       lower(fn || '.' || ln) || u,
       lower(fn || '.' || ln) || u || '@' || pg_temp.org_domain(o),
       pg_temp.bcrypt('user' || u),
       fn, ln,
       pg_temp.phone('user' || u),
       roles,
       CASE roles[1]
           WHEN 'ORG_ADMIN' THEN ARRAY['*:*']
           WHEN 'COORDINATOR' THEN ARRAY['clients:read', 'clients:write', 'visits:read', 'visits:write',
                                         'care_plans:read', 'care_plans:write', 'caregivers:read']
           WHEN 'SCHEDULER' THEN ARRAY['visits:read', 'visits:write', 'caregivers:read', 'clients:read']
           WHEN 'BILLING' THEN ARRAY['billing:read', 'billing:write', 'visits:read', 'evv:read']
           WHEN 'NURSE' THEN ARRAY['clients:read', 'care_plans:read', 'care_plans:write', 'visits:read']
           WHEN 'BRANCH_ADMIN' THEN ARRAY['branch:*', 'users:read', 'reports:read']
           WHEN 'AUDITOR' THEN ARRAY['audit:read', 'evv:read', 'visits:read']
           ELSE ARRAY['caregivers:read', 'caregivers:write', 'certifications:write']
       END,
       CASE WHEN u <= %(n_orgs)s
            THEN ARRAY(SELECT pg_temp.uidn('branch', b) FROM generate_series(o, %(n_branches)s, %(n_orgs)s) b)
            ELSE ARRAY[pg_temp.uidn('branch', pg_temp.branch_in_org(o, r_branch))] END,
       status,
       CASE WHEN status <> 'PENDING_VERIFICATION'
            THEN greatest(created, %(anchor)s::timestamptz - (r_login * r_login * r_login * 40) * interval '1 day'
                          - CASE WHEN deleted THEN (r_del * 400) * interval '1 day' ELSE interval '0' END) END,
       CASE WHEN status <> 'PENDING_VERIFICATION'
            THEN CASE WHEN pg_temp.hint('ipk' || u, 3) = 0
                      THEN '0.0.0.0'::inet + (16777216 + pg_temp.hint('ipp' || u, 200000000)::bigint * 17)
                      ELSE '10.0.0.0'::inet + pg_temp.hint('ipl' || u, 16777000) END END,
       CASE WHEN status = 'LOCKED' THEN 5 ELSE pg_temp.hint('fla' || u, 7) / 4 END,
       r_mfa < 0.4,
       CASE WHEN r_mfa < 0.4 THEN pg_temp.enc('mfa' || u) END,
       least(%(anchor)s::timestamptz, created + (r_login * 300) * interval '1 day'),
       jsonb_build_object(
           'theme', pg_temp.hpick(ARRAY['light', 'dark', 'system'], 'th' || u),
           'language', CASE WHEN pg_temp.hint('lng' || u, 10) = 0 THEN 'es-US' ELSE 'en-US' END,
           'timezone', (pg_temp.city_tz())[pg_temp.city_of_org(o)],
           'notifications', jsonb_build_object('email', pg_temp.hint('ne' || u, 4) > 0,
               'sms', pg_temp.hint('ns' || u, 2) = 0, 'push', pg_temp.hint('np' || u, 3) > 0,
               'digest', pg_temp.hpick(ARRAY['daily', 'weekly', 'never'], 'dg' || u)),
           'dashboard', jsonb_build_object(
               'default_view', pg_temp.hpick(ARRAY['schedule', 'clients', 'caregivers', 'billing', 'evv'], 'dv' || u),
               'pinned_clients', to_jsonb(ARRAY[pg_temp.uidn('client', 1 + pg_temp.hint('pc1' || u, %(n_clients)s)),
                                                pg_temp.uidn('client', 1 + pg_temp.hint('pc2' || u, %(n_clients)s))])),
           'last_seen_release', '2.' || pg_temp.hint('rel' || u, 40) || '.' || pg_temp.hint('rel2' || u, 10)),
       mod(u, 40) = 0,
       created,
       CASE WHEN u > %(n_orgs)s THEN pg_temp.uidn('user', o) END,
       CASE WHEN deleted THEN deleted_at
            ELSE created + (r_login * (%(anchor)s::date - created::date)) * interval '1 day' END,
       CASE WHEN u > %(n_orgs)s THEN pg_temp.uidn('user', o) END,
       1 + pg_temp.hint('uver' || u, 9),
       CASE WHEN deleted THEN deleted_at END,
       CASE WHEN deleted THEN pg_temp.uidn('user', o) END
FROM (SELECT u, mod(u - 1, %(n_orgs)s) + 1 AS o, random() AS r_role, random() AS r_branch,
             random() AS r_login, random() AS r_status, random() AS r_del, random() AS r_created,
             random() AS r_mfa
      FROM generate_series(1, %(n_users)s) u OFFSET 0) s,
LATERAL (SELECT pg_temp.hpick(pg_temp.first_names(), 'ufn' || u) AS fn,
                pg_temp.hpick(pg_temp.last_names(), 'uln' || u) AS ln,
                CASE WHEN u <= %(n_orgs)s THEN ARRAY['ORG_ADMIN', 'ADMIN']::varchar(50)[]
                     ELSE ARRAY[pg_temp.pick(ARRAY['COORDINATOR', 'COORDINATOR', 'COORDINATOR', 'SCHEDULER',
                                                   'SCHEDULER', 'BILLING', 'NURSE', 'NURSE', 'BRANCH_ADMIN',
                                                   'AUDITOR', 'HR'], r_role)]::varchar(50)[] END AS roles,
                CASE WHEN u <= %(n_orgs)s OR r_status < 0.88 THEN 'ACTIVE'
                     WHEN r_status < 0.95 THEN 'INACTIVE'
                     WHEN r_status < 0.97 THEN 'LOCKED'
                     WHEN r_status < 0.99 THEN 'PENDING_VERIFICATION'
                     ELSE 'SUSPENDED' END AS status,
                CASE WHEN u <= %(n_orgs)s THEN (%(anchor)s::date - %(span)s - 40)::timestamptz
                     ELSE (%(anchor)s::date - floor(%(span)s * (2 - sqrt(1 + 3 * r_created)))::integer - 1)::timestamptz
                          + pg_temp.hint('ucs' || u, 36000) * interval '1 second' + interval '7 hours' END AS created) x1,
LATERAL (SELECT x1.status = 'INACTIVE' AND r_del < 0.6 AS deleted,
                x1.created + (0.2 + 0.8 * r_del) * (%(anchor)s::timestamptz - x1.created) AS deleted_at) x2
ORDER BY u;

-- step: clients
INSERT INTO clients (id, organization_id, branch_id, client_number, first_name, middle_name, last_name,
    preferred_name, date_of_birth, gender, ssn, primary_phone, email, primary_address, emergency_contacts,
    insurance, allergies, medical_record_number, primary_physician, preferred_language, risk_flags, status,
    intake_date, discharge_date, discharge_reason, coordinator_id, is_demo_data, created_at, created_by,
    updated_at, updated_by, version, deleted_at, deleted_by)
SELECT pg_temp.uidn('client', i),
       pg_temp.uidn('org', o),
       pg_temp.uidn('branch', b),
       'CL-' || pg_temp.pad(i, 7),
       fn,
       CASE WHEN pg_temp.hint('cmn' || i, 3) > 0 THEN pg_temp.hpick(pg_temp.first_names(), 'cmn2' || i) END,
       ln,
       CASE WHEN pg_temp.hint('cpn' || i, 10) = 0 THEN pg_temp.hpick(pg_temp.first_names(), 'cpn2' || i) END,
       CASE WHEN r_dob < 0.1 THEN %(anchor)s::date - (18 * 365 + floor(r_dob * 10 * 46 * 365))::integer
            ELSE %(anchor)s::date - (65 * 365 + floor((r_dob - 0.1) / 0.9 * 35 * 365))::integer END,
       CASE WHEN pg_temp.hint('cg' || i, 100) < 61 THEN 'FEMALE'
            WHEN pg_temp.hint('cg' || i, 100) < 99 THEN 'MALE' ELSE 'UNDISCLOSED' END,
       pg_temp.enc('ssn' || i),
       pg_temp.phone('cp' || i),
       CASE WHEN pg_temp.hint('cem' || i, 2) = 0
            THEN lower(fn || '.' || ln) || pg_temp.hint('cem2' || i, 100) || '@'
                 || pg_temp.hpick(ARRAY['gmail.com', 'yahoo.com', 'aol.com', 'outlook.com', 'comcast.net',
                                        'icloud.com', 'att.net'], 'cem3' || i) END,
       pg_temp.address(c, 'cl' || i),
       ARRAY[jsonb_build_object('name', pg_temp.hpick(pg_temp.first_names(), 'ec1n' || i) || ' ' || ln,
                                'relationship', pg_temp.hpick(ARRAY['Daughter', 'Son', 'Spouse', 'Sister', 'Brother',
                                                                    'Niece', 'Nephew', 'Friend', 'Grandchild'], 'ec1r' || i),
                                'phone', pg_temp.phone('ec1' || i),
                                'email', lower(pg_temp.hpick(pg_temp.first_names(), 'ec1n' || i)) || '.' || lower(ln)
                                         || pg_temp.hint('ec1e' || i, 1000) || '@gmail.com',
                                'is_primary', true)]
       || CASE WHEN pg_temp.hint('ec2' || i, 2) = 0 THEN
              ARRAY[jsonb_build_object('name', pg_temp.hpick(pg_temp.first_names(), 'ec2n' || i) || ' '
                                               || pg_temp.hpick(pg_temp.last_names(), 'ec2l' || i),
                                       'relationship', pg_temp.hpick(ARRAY['Neighbor', 'Friend', 'Son', 'Daughter',
                                                                           'Pastor', 'Cousin'], 'ec2r' || i),
                                       'phone', pg_temp.phone('ec2' || i),
                                       'is_primary', false)]
          ELSE ARRAY[]::jsonb[] END,
       jsonb_build_object(
           'primary', jsonb_build_object(
               'payer_type', pg_temp.payer_type(i),
               'payer_name', CASE pg_temp.payer_type(i)
                   WHEN 'MEDICAID' THEN (pg_temp.city_states())[c] || ' Medicaid'
                   WHEN 'MEDICARE' THEN 'Medicare Part A'
                   WHEN 'VA' THEN 'Veterans Affairs Community Care'
                   WHEN 'PRIVATE_PAY' THEN 'Private Pay'
                   ELSE pg_temp.hpick(ARRAY['Aetna', 'UnitedHealthcare', 'Humana', 'Cigna', 'Blue Cross Blue Shield',
                                            'Genworth', 'John Hancock LTC', 'Mutual of Omaha'], 'pn' || i) END,
               'member_id', upper(pg_temp.hex('mem' || i, 11)),
               'group_number', 'GRP' || pg_temp.digits('grp' || i, 7),
               'authorization_number', 'PA' || pg_temp.digits('pa' || i, 12),
               'authorized_hours_per_week', 6 + pg_temp.hint('ahw' || i, 35),
               'effective_date', intake0 - pg_temp.hint('eff' || i, 60)),
           'secondary', CASE WHEN pg_temp.hint('sec' || i, 4) = 0 THEN jsonb_build_object(
               'payer_name', pg_temp.hpick(ARRAY['AARP Medigap', 'Tricare for Life', 'Humana Supplement'], 'spn' || i),
               'member_id', upper(pg_temp.hex('smem' || i, 10))) END,
           'verified_at', intake0 - pg_temp.hint('ver' || i, 10)),
       CASE WHEN pg_temp.hint('al' || i, 10) < 5 THEN '[]'::jsonb
            ELSE jsonb_build_array(jsonb_build_object(
                     'allergen', pg_temp.hpick(ARRAY['Penicillin', 'Sulfa drugs', 'Latex', 'Peanuts', 'Shellfish',
                                                     'Codeine', 'Aspirin', 'Iodine', 'Eggs', 'Bee stings'], 'ala' || i),
                     'reaction', pg_temp.hpick(ARRAY['Rash', 'Hives', 'Anaphylaxis', 'Nausea', 'Swelling',
                                                     'Shortness of breath'], 'alr' || i),
                     'severity', pg_temp.hpick(ARRAY['MILD', 'MODERATE', 'SEVERE'], 'als' || i),
                     'noted_at', intake0 - pg_temp.hint('aln' || i, 400)))
                 || CASE WHEN pg_temp.hint('al2' || i, 3) = 0 THEN jsonb_build_array(jsonb_build_object(
                     'allergen', pg_temp.hpick(ARRAY['Morphine', 'Ibuprofen', 'Strawberries', 'Dust mites',
                                                     'Cat dander', 'Adhesive tape'], 'ala2' || i),
                     'reaction', pg_temp.hpick(ARRAY['Itching', 'Rash', 'Vomiting', 'Wheezing'], 'alr2' || i),
                     'severity', pg_temp.hpick(ARRAY['MILD', 'MODERATE'], 'als2' || i))) ELSE '[]'::jsonb END END,
       'MRN' || pg_temp.digits('mrn' || i, 9),
       jsonb_build_object('name', 'Dr. ' || pg_temp.hpick(pg_temp.first_names(), 'dfn' || i) || ' '
                                  || pg_temp.hpick(pg_temp.last_names(), 'dln' || i),
                          'npi', '1' || pg_temp.digits('dnpi' || i, 9),
                          'phone', pg_temp.phone('doc' || i),
                          'practice', pg_temp.hpick(pg_temp.last_names(), 'dpr' || i) || ' '
                                      || pg_temp.hpick(ARRAY['Family Medicine', 'Internal Medicine', 'Geriatrics',
                                                             'Primary Care Associates', 'Medical Group'], 'dpt' || i)),
       CASE WHEN pg_temp.hint('lang' || i, 100) < 84 THEN 'English'
            WHEN pg_temp.hint('lang' || i, 100) < 94 THEN 'Spanish'
            ELSE pg_temp.hpick(ARRAY['Vietnamese', 'Mandarin', 'Russian', 'Tagalog', 'Somali'], 'lang2' || i) END,
       array_remove(ARRAY[
           CASE WHEN pg_temp.hint('rf1' || i, 100) < 30 THEN 'FALL_RISK' END,
           CASE WHEN pg_temp.hint('rf2' || i, 100) < 25 THEN 'DIABETIC' END,
           CASE WHEN pg_temp.hint('rf3' || i, 100) < 35 THEN 'LIVES_ALONE' END,
           CASE WHEN pg_temp.hint('rf4' || i, 100) < 20 THEN 'COGNITIVE_IMPAIRMENT' END,
           CASE WHEN pg_temp.hint('rf5' || i, 100) < 8 THEN 'OXYGEN_USE' END,
           CASE WHEN pg_temp.hint('rf6' || i, 100) < 5 THEN 'WANDERING' END]::varchar(50)[], NULL),
       status,
       CASE WHEN status <> 'INQUIRY' THEN intake_date END,
       discharge,
       CASE status WHEN 'DECEASED' THEN 'Deceased'
                   WHEN 'DISCHARGED' THEN pg_temp.hpick(ARRAY['Goals met', 'Moved to assisted living',
                        'Transferred to another agency', 'Long-term hospitalization', 'Family assumed care',
                        'Authorization ended', 'Client request'], 'dr' || i) END,
       pg_temp.uidn('user', coord),
       mod(i, 50) = 0,
       created,
       pg_temp.uidn('user', coord),
       CASE WHEN deleted_at IS NOT NULL THEN deleted_at
            WHEN status = 'ACTIVE' THEN greatest(created, %(anchor)s::timestamptz - (r_upd * 120) * interval '1 day')
            WHEN discharge IS NOT NULL THEN discharge + interval '15 hours'
            WHEN status IN ('INQUIRY', 'PENDING_INTAKE') THEN created + interval '3 hours'
            ELSE changed END,
       pg_temp.uidn('user', coord),
       1 + pg_temp.hint('cv' || i, 8),
       deleted_at,
       CASE WHEN deleted_at IS NOT NULL THEN pg_temp.uidn('user', coord) END
-- Churn: intakes grow mildly over the years (the newest year about twice the
-- oldest), stays last 14 days plus an exponential with a mean of 700 days; a
-- client whose stay has not ended is ACTIVE (or ON_HOLD), otherwise discharged.
FROM (SELECT i, pg_temp.branch_of(i) AS b, random() AS r_intake, random() AS r_stay, random() AS r_status,
             random() AS r_dis, random() AS r_del, random() AS r_delage, random() AS r_dob, random() AS r_user,
             random() AS r_upd
      FROM generate_series(1, %(n_clients)s) i OFFSET 0) s,
LATERAL (SELECT pg_temp.org_of_branch(b) AS o,
                pg_temp.hpick(pg_temp.first_names(), 'cfn' || i) AS fn,
                pg_temp.hpick(pg_temp.last_names(), 'cln' || i) AS ln,
                CASE WHEN r_status < 0.035 THEN %(anchor)s::date - floor(r_intake * 40)::integer
                     ELSE %(anchor)s::date - floor(%(span)s * (2 - sqrt(1 + 3 * r_intake)))::integer END AS intake0) x1,
LATERAL (SELECT x1.intake0 + 14 + floor(-ln(1 - r_stay) * 700)::integer AS end0) x1b,
LATERAL (SELECT pg_temp.city_of_org(x1.o) AS c,
                pg_temp.user_in_org(x1.o, r_user) AS coord,
                CASE WHEN r_status < 0.012 THEN 'INQUIRY'
                     WHEN r_status < 0.035 THEN 'PENDING_INTAKE'
                     WHEN x1b.end0 > %(anchor)s::date THEN CASE WHEN r_dis < 0.9 THEN 'ACTIVE' ELSE 'ON_HOLD' END
                     WHEN r_dis < 0.72 THEN 'DISCHARGED'
                     WHEN r_dis < 0.92 THEN 'DECEASED'
                     ELSE 'INACTIVE' END AS status) x2,
LATERAL (SELECT CASE WHEN x2.status IN ('DISCHARGED', 'DECEASED') THEN x1b.end0 END AS discharge,
                CASE WHEN x2.status = 'PENDING_INTAKE' THEN %(anchor)s::date + floor(r_dis * 21)::integer
                     ELSE x1.intake0 END AS intake_date,
                CASE WHEN x2.status = 'INACTIVE' THEN x1b.end0::timestamptz + interval '14 hours'
                     ELSE greatest(x1.intake0::timestamptz,
                                   %(anchor)s::timestamptz - (1 + r_dis * 60) * interval '1 day') END AS changed,
                (x1.intake0 - 2 - floor(r_upd * 12)::integer)::timestamptz
                    + pg_temp.hint('ccs' || i, 32000) * interval '1 second' + interval '8 hours' AS created) x3,
LATERAL (SELECT CASE WHEN x2.status IN ('DISCHARGED', 'DECEASED', 'INACTIVE') AND r_del < 0.2
                     THEN x1b.end0::timestamptz + r_delage * (%(anchor)s::timestamptz - x1b.end0::timestamptz)
                          + interval '10 hours' END AS deleted_at) x4
ORDER BY i;

-- step: caregivers
INSERT INTO caregivers (id, organization_id, primary_branch_id, branch_ids, employee_number, first_name,
    last_name, date_of_birth, ssn, email, phone, address, credentials, payroll_info, skills, languages,
    hire_date, termination_date, pay_rate, max_hours_per_week, supervisor_id, status, compliance_status,
    is_demo_data, created_at, created_by, updated_at, updated_by, version, deleted_at, deleted_by)
SELECT pg_temp.uidn('caregiver', k),
       pg_temp.uidn('org', o),
       pg_temp.uidn('branch', b),
       CASE WHEN b2 <> b THEN ARRAY[pg_temp.uidn('branch', b), pg_temp.uidn('branch', b2)]
            ELSE ARRAY[pg_temp.uidn('branch', b)] END,
       'EMP-' || pg_temp.pad(k, 6),
       fn, ln,
       %(anchor)s::date - (19 * 365 + floor(r_dob * 45 * 365))::integer,
       pg_temp.enc('cgssn' || k),
       lower(fn || '.' || ln) || k || '@' || pg_temp.hpick(ARRAY['gmail.com', 'yahoo.com', 'outlook.com',
                                                                'hotmail.com', 'icloud.com'], 'cge' || k),
       pg_temp.phone('cg' || k),
       pg_temp.address(c, 'cg' || k),
       jsonb_build_array(
           jsonb_build_object('type', pg_temp.hpick(ARRAY['CNA', 'HHA', 'PCA', 'LPN', 'RN'], 'cr1' || k),
                              'number', upper(pg_temp.hex('crn1' || k, 10)),
                              'state', (pg_temp.city_states())[c],
                              'issued', hire - pg_temp.hint('cri1' || k, 700),
                              'expires', hire + 365 * (1 + pg_temp.hint('cre1' || k, 3)),
                              'verified', pg_temp.hint('crv1' || k, 10) > 0),
           jsonb_build_object('type', 'CPR', 'number', 'CPR-' || pg_temp.digits('crn2' || k, 8),
                              'issued', hire + pg_temp.hint('cri2' || k, 300),
                              'expires', hire + 730 + pg_temp.hint('cri2' || k, 300), 'verified', true),
           jsonb_build_object('type', 'BACKGROUND_CHECK', 'provider', pg_temp.hpick(ARRAY['Sterling', 'HireRight',
                              'Checkr', 'First Advantage'], 'bcp' || k),
                              'reference', pg_temp.uidn('bgcheck', k),
                              'completed', hire - pg_temp.hint('bcc' || k, 30), 'result', 'CLEAR')),
       jsonb_build_object(
           'pay_type', 'HOURLY',
           'pay_frequency', pg_temp.hpick(ARRAY['WEEKLY', 'BIWEEKLY'], 'pf' || k),
           'overtime_eligible', true,
           'direct_deposit', jsonb_build_object(
               'bank_name', pg_temp.hpick(ARRAY['Chase', 'Wells Fargo', 'Bank of America', 'US Bank', 'PNC',
                                               'Truist', 'Navy Federal CU', 'Fifth Third'], 'bk' || k),
               'routing_number_encrypted', pg_temp.enc('rt' || k),
               'account_number_encrypted', pg_temp.enc('ac' || k),
               'account_last4', pg_temp.digits('acl' || k, 4),
               'account_type', pg_temp.hpick(ARRAY['CHECKING', 'SAVINGS'], 'at' || k)),
           'tax', jsonb_build_object('w4_filing_status', pg_temp.hpick(ARRAY['SINGLE', 'MARRIED_JOINT',
                                     'HEAD_OF_HOUSEHOLD'], 'w4' || k),
                                     'dependents', pg_temp.hint('dep' || k, 4),
                                     'state_withholding', (pg_temp.city_states())[c])),
       array_remove(ARRAY[
           CASE WHEN pg_temp.hint('sk1' || k, 10) < 8 THEN 'PERSONAL_CARE' END,
           CASE WHEN pg_temp.hint('sk2' || k, 10) < 6 THEN 'MEAL_PREP' END,
           CASE WHEN pg_temp.hint('sk3' || k, 10) < 4 THEN 'DEMENTIA_CARE' END,
           CASE WHEN pg_temp.hint('sk4' || k, 10) < 3 THEN 'HOYER_LIFT' END,
           CASE WHEN pg_temp.hint('sk5' || k, 10) < 5 THEN 'MEDICATION_REMINDERS' END,
           CASE WHEN pg_temp.hint('sk6' || k, 10) < 2 THEN 'WOUND_CARE' END,
           CASE WHEN pg_temp.hint('sk7' || k, 10) < 4 THEN 'TRANSPORTATION' END]::varchar(50)[], NULL),
       CASE WHEN pg_temp.hint('cgl' || k, 10) < 7 THEN ARRAY['English']::varchar(50)[]
            ELSE ARRAY['English', pg_temp.hpick(ARRAY['Spanish', 'Spanish', 'Haitian Creole', 'Vietnamese',
                                                     'Somali', 'Tagalog', 'Amharic'], 'cgl2' || k)]::varchar(50)[] END,
       hire,
       term,
       round((14.50 + r_pay * 9.5)::numeric, 2),
       (ARRAY[20, 30, 40, 40, 40, 45])[1 + pg_temp.hint('mh' || k, 6)],
       CASE WHEN k > %(n_branches)s THEN pg_temp.uidn('caregiver', b) END,
       status,
       CASE WHEN status IN ('TERMINATED', 'INACTIVE') THEN 'NON_COMPLIANT'
            WHEN status IN ('APPLICANT', 'ONBOARDING') THEN 'PENDING'
            WHEN pg_temp.hint('cmp' || k, 10) = 0 THEN 'EXPIRING_SOON' ELSE 'COMPLIANT' END,
       mod(k, 50) = 0,
       created,
       pg_temp.uidn('user', pg_temp.user_in_org(o, r_user)),
       CASE WHEN deleted_at IS NOT NULL THEN deleted_at
            WHEN term IS NOT NULL THEN term + interval '16 hours'
            ELSE greatest(created, %(anchor)s::timestamptz - (r_upd * 200) * interval '1 day') END,
       pg_temp.uidn('user', pg_temp.user_in_org(o, r_user)),
       1 + pg_temp.hint('cgv' || k, 12),
       deleted_at,
       CASE WHEN deleted_at IS NOT NULL THEN pg_temp.uidn('user', pg_temp.user_in_org(o, r_user)) END
FROM (SELECT k, pg_temp.branch_of(k) AS b, random() AS r_hire, random() AS r_status, random() AS r_term,
             random() AS r_del, random() AS r_dob, random() AS r_pay, random() AS r_user, random() AS r_upd,
             random() AS r_b2
      FROM generate_series(1, %(n_caregivers)s) k OFFSET 0) s,
-- Turnover: hires grow mildly over the years, tenure is an exponential with a
-- mean of 900 days. The first caregiver of every branch (its supervisor) has
-- been employed from the start.
LATERAL (SELECT pg_temp.org_of_branch(b) AS o,
                pg_temp.hpick(pg_temp.first_names(), 'gfn' || k) AS fn,
                pg_temp.hpick(pg_temp.last_names(), 'gln' || k) AS ln,
                CASE WHEN k <= %(n_branches)s THEN %(anchor)s::date - %(span)s - 20
                     WHEN r_status < 0.04 THEN %(anchor)s::date - floor(r_hire * 30)::integer
                     ELSE %(anchor)s::date - floor(%(span)s * (2 - sqrt(1 + 3 * r_hire)))::integer END AS hire) x1,
LATERAL (SELECT CASE WHEN k <= %(n_branches)s THEN NULL
                     ELSE x1.hire + 30 + floor(-ln(1 - r_term) * 900)::integer END AS end0) x1b,
LATERAL (SELECT pg_temp.city_of_org(x1.o) AS c,
                CASE WHEN r_b2 < 0.25 THEN pg_temp.branch_in_org(x1.o, r_b2 * 4) ELSE b END AS b2,
                CASE WHEN k <= %(n_branches)s THEN 'ACTIVE'
                     WHEN r_status < 0.015 THEN 'APPLICANT'
                     WHEN r_status < 0.04 THEN 'ONBOARDING'
                     WHEN x1b.end0 <= %(anchor)s::date THEN 'TERMINATED'
                     WHEN r_status < 0.92 THEN 'ACTIVE'
                     WHEN r_status < 0.95 THEN 'ON_LEAVE'
                     WHEN r_status < 0.99 THEN 'INACTIVE'
                     ELSE 'SUSPENDED' END AS status) x2,
LATERAL (SELECT CASE WHEN x2.status = 'TERMINATED' THEN x1b.end0 END AS term,
                (x1.hire - 7 - floor(r_upd * 20)::integer)::timestamptz
                    + pg_temp.hint('cgc' || k, 32000) * interval '1 second' + interval '8 hours' AS created) x3,
LATERAL (SELECT CASE WHEN x2.status = 'TERMINATED' AND r_del < 0.35
                     THEN x3.term::timestamptz + r_del / 0.35 * (%(anchor)s::timestamptz - x3.term::timestamptz)
                          + interval '11 hours' END AS deleted_at) x4
ORDER BY k;

-- step: service_spans
-- Session-local lookup tables for the visits step: every client's days of service
-- laid end to end (lo = first position), and every caregiver's employment period.
CREATE TEMP TABLE client_spans AS
SELECT t.*, sum(t.len) OVER (ORDER BY t.i) - t.len AS lo
FROM (
    SELECT substr(c.client_number, 4)::integer AS i, c.id, c.is_demo_data AS demo, c.primary_address AS address,
           w.vstart, greatest(w.vend - w.vstart, 0) + 1 AS len
    FROM clients c,
    LATERAL (SELECT coalesce(c.intake_date, c.created_at::date) AS vstart,
                    least(CASE WHEN c.status = 'ACTIVE' THEN %(anchor)s::date + 14
                               WHEN c.status IN ('DISCHARGED', 'DECEASED') THEN c.discharge_date
                               WHEN c.status IN ('INQUIRY', 'PENDING_INTAKE') THEN coalesce(c.intake_date, c.created_at::date)
                               ELSE c.updated_at::date END,
                          coalesce(c.deleted_at::date, %(anchor)s::date + 14)) AS vend) w
) t;
CREATE UNIQUE INDEX ON client_spans (lo);
ANALYZE client_spans;
CREATE TEMP TABLE caregiver_spans AS
SELECT primary_branch_id AS branch_id, id, hire_date, coalesce(termination_date, 'infinity'::date) AS until
FROM caregivers WHERE status NOT IN ('APPLICANT', 'ONBOARDING');
CREATE INDEX ON caregiver_spans (branch_id);
ANALYZE caregiver_spans;

-- step: visits
INSERT INTO visits (id, organization_id, branch_id, client_id, caregiver_id, visit_number, visit_type,
    service_type_code, scheduled_date, scheduled_start_time, scheduled_end_time, scheduled_duration,
    actual_start_time, actual_end_time, actual_duration, status, status_history, address, verification_data,
    billable_hours, notes, cancellation_reason, tags, is_demo_data, created_at, created_by, updated_at,
    updated_by, version, deleted_at, deleted_by)
SELECT pg_temp.uidn('visit', g),
       pg_temp.uidn('org', o),
       pg_temp.uidn('branch', b),
       client_id,
       cg_id,
       'VIS-' || to_char(d, 'YYYYMMDD') || '-' || pg_temp.pad(g, 7),
       vtype,
       vcode,
       d, start_time, (start_time + dur * interval '1 minute')::time, dur,
       act_start, act_end,
       CASE WHEN act_end IS NOT NULL THEN (extract(epoch FROM act_end - act_start) / 60)::integer END,
       status,
       -- status history: scheduled, assigned, clock-in, final transition
       jsonb_build_array(jsonb_build_object('status', CASE WHEN status = 'DRAFT' THEN 'DRAFT' ELSE 'SCHEDULED' END,
                                            'at', created, 'by', creator))
       || CASE WHEN cg_id IS NOT NULL AND act_start IS NULL THEN jsonb_build_array(jsonb_build_object(
              'status', 'ASSIGNED', 'at', date_trunc('second', created + (1 + r_jit1 * 50) * interval '1 hour'),
              'by', creator)) ELSE '[]'::jsonb END
       || CASE WHEN act_start IS NOT NULL THEN jsonb_build_array(jsonb_build_object(
              'status', 'IN_PROGRESS', 'at', act_start)) ELSE '[]'::jsonb END
       || CASE WHEN status IN ('SCHEDULED', 'ASSIGNED', 'UNASSIGNED', 'DRAFT', 'IN_PROGRESS') THEN '[]'::jsonb
               ELSE jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
              'status', status,
              'at', coalesce(act_end, act_start, date_trunc('second', sched_ts - (r_jit2 * 20) * interval '1 hour')),
              'by', CASE WHEN act_start IS NULL THEN creator END,
              'reason', CASE WHEN status IN ('CANCELLED', 'NO_SHOW_CLIENT', 'NO_SHOW_CAREGIVER', 'REJECTED')
                             THEN reason END))) END,
       address,
       CASE WHEN act_start IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
           'method', method,
           'verified_at', coalesce(act_end, act_start),
           'distance_m', pg_temp.hint('vgd' || g, 220),
           'geofence_ok', pg_temp.hint('vgd' || g, 220) <= 150,
           'signature', CASE WHEN act_end IS NOT NULL THEN pg_temp.hint('vsg' || g, 3) > 0 END)) END,
       CASE WHEN act_end IS NOT NULL THEN round((extract(epoch FROM act_end - act_start) / 3600.0)::numeric, 2) END,
       CASE WHEN act_end IS NOT NULL AND pg_temp.hint('vnote' || g, 10) < 5 THEN
           pg_temp.hpick(ARRAY['Client in good spirits today.', 'Client was tired but cooperative.',
                'Client reported mild pain in lower back.', 'Client ate most of lunch.',
                'Client appeared confused in the morning, improved after breakfast.',
                'Family member present during visit.', 'Client refused shower, agreed to sponge bath.',
                'Client walked to the mailbox with walker.'], 'vn1' || g) || ' '
           || pg_temp.hpick(ARRAY['Assisted with bathing and dressing.', 'Prepared meals for two days.',
                'Reminded client of medications, all taken as prescribed.', 'Completed laundry and changed linens.',
                'Accompanied client on a short walk.', 'Helped organize pill box for the week.',
                'Cleaned kitchen and bathroom.', 'Picked up prescription from pharmacy.'], 'vn2' || g) || ' '
           || 'BP ' || (105 + pg_temp.hint('vbp1' || g, 50)) || '/' || (62 + pg_temp.hint('vbp2' || g, 30))
           || ', pulse ' || (58 + pg_temp.hint('vpl' || g, 40)) || '. '
           || CASE WHEN pg_temp.hint('vn3' || g, 4) = 0 THEN 'Follow-up: ' || pg_temp.hpick(ARRAY[
                'notify coordinator about low food supply.', 'skin redness on left heel, reported to nurse.',
                'client requests earlier visit time.', 'walker brake loose, family informed.',
                'refill needed for metformin.'], 'vn4' || g) ELSE '' END
       END,
       CASE WHEN status IN ('CANCELLED', 'NO_SHOW_CLIENT', 'NO_SHOW_CAREGIVER', 'REJECTED') THEN reason END,
       array_remove(ARRAY[
           CASE WHEN extract(isodow FROM d) >= 6 THEN 'weekend' END,
           CASE WHEN pg_temp.hint('vtg1' || g, 100) < 8 THEN 'high-acuity' END,
           CASE WHEN pg_temp.hint('vtg2' || g, 100) < 5 THEN 'overtime' END,
           CASE WHEN pg_temp.hint('vtg3' || g, 100) < 6 THEN 'rescheduled' END,
           CASE WHEN pg_temp.hint('vtg4' || g, 100) < 3 THEN 'two-person-assist' END,
           CASE WHEN pg_temp.hint('vtg5' || g, 100) < 4 THEN 'backup-caregiver' END,
           CASE WHEN to_char(d, 'MMDD') IN ('0101', '0704', '1225', '1124', '1128', '0527', '0902') THEN 'holiday' END
       ]::text[], NULL),
       demo,
       created,
       creator,
       CASE WHEN deleted_at IS NOT NULL THEN deleted_at
            ELSE least(%(anchor)s::timestamptz, coalesce(act_end, act_start, created + interval '3 hours')
                                                 + (5 + r_jit1 * 600) * interval '1 second') END,
       creator,
       1 + (cg_id IS NOT NULL)::integer + (act_start IS NOT NULL)::integer
         + (status NOT IN ('SCHEDULED', 'ASSIGNED', 'UNASSIGNED', 'DRAFT', 'IN_PROGRESS'))::integer
         + (deleted_at IS NOT NULL)::integer,
       deleted_at,
       CASE WHEN deleted_at IS NOT NULL THEN creator END
FROM (
    SELECT x.*,
           CASE WHEN x.status IN ('DRAFT', 'UNASSIGNED') THEN NULL
                ELSE coalesce(cgs.id, pg_temp.uidn('caregiver', pg_temp.caregiver_in_branch(x.b, x.r_cg))) END AS cg_id,
           CASE WHEN x.status IN ('ARRIVED', 'IN_PROGRESS', 'PAUSED', 'COMPLETED', 'INCOMPLETE')
                THEN date_trunc('second', least(%(anchor)s::timestamptz - interval '1 minute',
                                                x.sched_ts + (r_jit1 * 25 - 10) * interval '1 minute')) END AS act_start,
           CASE WHEN x.status = 'COMPLETED'
                THEN date_trunc('second', x.sched_ts + (x.dur + r_jit1 * 25 - 10 + r_jit2 * 20 - 10) * interval '1 minute')
                WHEN x.status = 'INCOMPLETE'
                THEN date_trunc('second', x.sched_ts + (x.dur * (0.3 + 0.5 * r_jit2)) * interval '1 minute') END AS act_end,
           CASE WHEN (x.status IN ('CANCELLED', 'REJECTED', 'DRAFT') AND r_del < 0.25) OR r_del < 0.008
                THEN least(%(anchor)s::timestamptz,
                           x.created + (interval '2 hours') + r_delage * (%(anchor)s::timestamptz - x.created))
                END AS deleted_at
    FROM (
        SELECT v.*,
               -- "now" is the anchor (today 00:00 UTC): visits starting later are upcoming,
               -- visits under way then are live, the rest are history.
               CASE WHEN ((v.d + v.start_time) AT TIME ZONE v.tz) > %(anchor)s::timestamptz THEN
                        CASE WHEN r_status < 0.08 THEN 'DRAFT' WHEN r_status < 0.30 THEN 'SCHEDULED'
                             WHEN r_status < 0.40 THEN 'UNASSIGNED' WHEN r_status < 0.70 THEN 'ASSIGNED'
                             ELSE 'CONFIRMED' END
                    WHEN ((v.d + v.start_time) AT TIME ZONE v.tz) + (v.dur + 60) * interval '1 minute'
                         > %(anchor)s::timestamptz THEN
                        CASE WHEN r_status < 0.10 THEN 'CONFIRMED' WHEN r_status < 0.20 THEN 'EN_ROUTE'
                             WHEN r_status < 0.30 THEN 'ARRIVED' WHEN r_status < 0.90 THEN 'IN_PROGRESS'
                             ELSE 'PAUSED' END
                    ELSE
                        CASE WHEN r_status < 0.885 THEN 'COMPLETED' WHEN r_status < 0.905 THEN 'INCOMPLETE'
                             WHEN r_status < 0.955 THEN 'CANCELLED' WHEN r_status < 0.975 THEN 'NO_SHOW_CLIENT'
                             WHEN r_status < 0.99 THEN 'NO_SHOW_CAREGIVER' ELSE 'REJECTED' END
               END AS status,
               ((v.d + v.start_time) AT TIME ZONE v.tz) AS sched_ts,
               date_trunc('second', least(%(anchor)s::timestamptz - (r_user * 5) * interval '1 hour',
                     (v.d - 1 - floor(r_lead * 21)::integer)::timestamptz
                        + (8 + r_lead * 9) * interval '1 hour')) AS created
        FROM (
            SELECT s.g, s.r_status, s.r_cg, s.r_jit1, s.r_jit2, s.r_del, s.r_delage, s.r_lead, s.r_user,
                   c.id AS client_id, c.demo, c.address, c.i AS ci,
                   pg_temp.branch_of(c.i) AS b,
                   pg_temp.org_of_branch(pg_temp.branch_of(c.i)) AS o,
                   (pg_temp.city_tz())[pg_temp.city_of_org(pg_temp.org_of_branch(pg_temp.branch_of(c.i)))] AS tz,
                   c.vstart + (s.x - c.lo)::integer AS d,
                   time '06:00' + floor(s.r_start * 53) * interval '15 minutes' AS start_time,
                   (ARRAY[60, 60, 90, 120, 120, 120, 180, 240, 240, 360, 480])[1 + floor(s.r_dur * 11)::integer] AS dur,
                   (ARRAY['PERSONAL_CARE', 'PERSONAL_CARE', 'PERSONAL_CARE', 'COMPANIONSHIP', 'HOMEMAKER',
                          'RESPITE', 'SKILLED_NURSING', 'PERSONAL_CARE'])[1 + floor(s.r_type * 8)::integer] AS vtype,
                   (ARRAY['T1019', 'T1019', 'S5125', 'S5135', 'S5130', 'S5150', 'T1030', 'S5125'])
                       [1 + floor(s.r_type * 8)::integer] AS vcode,
                   CASE WHEN s.r_method < 0.85 THEN 'GPS' WHEN s.r_method < 0.95 THEN 'TELEPHONY'
                        WHEN s.r_method < 0.99 THEN 'FACIAL' ELSE 'MANUAL' END AS method,
                   pg_temp.uidn('user', pg_temp.user_in_org(pg_temp.org_of_branch(pg_temp.branch_of(c.i)), s.r_user))
                       AS creator,
                   pg_temp.pick(ARRAY['Client hospitalized', 'Client request', 'Caregiver unavailable',
                                      'Weather', 'Family visiting', 'Client not home at scheduled time',
                                      'Scheduling conflict', 'Authorization expired', 'Caregiver illness',
                                      'Client at medical appointment'], s.r_method) AS reason
            FROM (SELECT g, floor(random() * (SELECT sum(len) FROM client_spans))::bigint AS x,
                         random() AS r_status, random() AS r_cg, random() AS r_start, random() AS r_dur,
                         random() AS r_type, random() AS r_method, random() AS r_jit1, random() AS r_jit2,
                         random() AS r_del, random() AS r_delage, random() AS r_lead, random() AS r_user
                  FROM generate_series(1, %(n_visits)s) g OFFSET 0) s
            -- the client whose days of service contain x: visits spread evenly over service days
            CROSS JOIN LATERAL (SELECT cs.* FROM client_spans cs WHERE cs.lo <= s.x ORDER BY cs.lo DESC LIMIT 1) c
            OFFSET 0
        ) v
        OFFSET 0
    ) x
    -- a caregiver of the client's branch employed on the visit date
    LEFT JOIN LATERAL (
        SELECT k.id FROM caregiver_spans k
        WHERE k.branch_id = pg_temp.uidn('branch', x.b) AND k.hire_date <= x.d AND k.until >= x.d
        ORDER BY hashtextextended(x.g::text || k.id::text, %(seed)s) LIMIT 1
    ) cgs ON true
    OFFSET 0
) y
ORDER BY g;

-- step: evv_records
INSERT INTO evv_records (id, visit_id, organization_id, branch_id, client_id, caregiver_id, service_type_code,
    service_date, clock_in_time, clock_out_time, total_duration, clock_in_location, clock_out_location,
    verification_method, compliance_flags, record_status, submitted_to_aggregator_at, aggregator_confirmation,
    device_info, integrity_hash, recorded_at, created_at, created_by, updated_at, updated_by, version)
SELECT id, visit_id, organization_id, branch_id, client_id, caregiver_id, service_type_code, service_date,
       clock_in_time, clock_out_time, total_duration, clock_in_location, clock_out_location, verification_method,
       compliance_flags, record_status, submitted_at,
       CASE WHEN record_status IN ('ACCEPTED', 'AMENDED') THEN 'AGG-' || upper(pg_temp.hex('agc' || visit_id, 14)) END,
       device_info,
       pg_temp.sha256hex(visit_id::text || '|' || caregiver_id::text || '|' || client_id::text || '|'
                         || clock_in_time::text || '|' || coalesce(clock_out_time::text, '') || '|'
                         || coalesce(clock_in_location::text, '')),
       recorded_at,
       clock_in_time, created_by,
       greatest(recorded_at, coalesce(submitted_at, recorded_at)),
       created_by,
       pg_temp.evv_nrev(id, clock_out_time IS NOT NULL)
FROM (
    SELECT pg_temp.uid('evv', v.id::text) AS id, v.id AS visit_id, v.organization_id, v.branch_id, v.client_id,
           v.caregiver_id, v.service_type_code, v.scheduled_date AS service_date,
           v.actual_start_time AS clock_in_time, v.actual_end_time AS clock_out_time, v.actual_duration AS total_duration,
           jsonb_build_object(
               'lat', round((v.address ->> 'latitude')::numeric + (pg_temp.hint('ela' || v.id::text, 1600) - 800) / 1000000.0, 6),
               'lng', round((v.address ->> 'longitude')::numeric + (pg_temp.hint('elo' || v.id::text, 1600) - 800) / 1000000.0, 6),
               'acc', 3 + pg_temp.hint('eac' || v.id::text, 45)) AS clock_in_location,
           CASE WHEN v.actual_end_time IS NOT NULL THEN jsonb_build_object(
               'lat', round((v.address ->> 'latitude')::numeric + (pg_temp.hint('ela2' || v.id::text, 1600) - 800) / 1000000.0, 6),
               'lng', round((v.address ->> 'longitude')::numeric + (pg_temp.hint('elo2' || v.id::text, 1600) - 800) / 1000000.0, 6),
               'acc', 3 + pg_temp.hint('eac2' || v.id::text, 45)) END AS clock_out_location,
           v.verification_data ->> 'method' AS verification_method,
           CASE WHEN v.actual_end_time IS NULL THEN jsonb_build_array(jsonb_build_object(
                    'code', 'MISSING_CLOCK_OUT', 'severity', 'HIGH', 'detected_at', v.actual_start_time + interval '4 hours'))
                WHEN r1 < 0.07 THEN jsonb_build_array(jsonb_build_object(
                    'code', 'LATE_CLOCK_IN', 'severity', 'LOW', 'minutes_late', 8 + floor(r2 * 40)::integer))
                WHEN r1 < 0.10 THEN jsonb_build_array(jsonb_build_object(
                    'code', 'GEOFENCE_VIOLATION', 'severity', 'MEDIUM',
                    'distance_m', (v.verification_data ->> 'distance_m')::integer))
                WHEN r1 < 0.12 THEN jsonb_build_array(jsonb_build_object(
                    'code', 'MANUAL_OVERRIDE', 'severity', 'MEDIUM', 'approved_by', v.created_by),
                    jsonb_build_object('code', 'SHORT_VISIT', 'severity', 'LOW'))
                ELSE '[]'::jsonb END AS compliance_flags,
           CASE WHEN v.actual_end_time IS NULL THEN 'PENDING'
                WHEN v.scheduled_date > %(anchor)s::date - 3 THEN
                    CASE WHEN r3 < 0.5 THEN 'COMPLETE' ELSE 'VERIFIED' END
                WHEN v.scheduled_date > %(anchor)s::date - 10 THEN
                    CASE WHEN r3 < 0.6 THEN 'SUBMITTED' ELSE 'ACCEPTED' END
                WHEN r3 < 0.90 THEN 'ACCEPTED' WHEN r3 < 0.95 THEN 'AMENDED'
                WHEN r3 < 0.98 THEN 'SUBMITTED' ELSE 'REJECTED' END AS record_status,
           CASE WHEN v.actual_end_time IS NOT NULL AND v.scheduled_date <= %(anchor)s::date - 3
                THEN least(%(anchor)s::timestamptz, v.actual_end_time + (6 + r2 * 60) * interval '1 hour') END AS submitted_at,
           jsonb_build_object('os', CASE WHEN r4 < 0.55 THEN 'android ' || (10 + floor(r4 * 10))::text
                                         ELSE 'ios ' || (14 + floor(r4 * 4))::text || '.' || floor(r2 * 6)::text END,
                              'app', '3.' || floor(r5 * 20)::text || '.' || floor(r2 * 9)::text,
                              'device_id', 'dev_' || pg_temp.hex('dev' || v.caregiver_id::text, 16)) AS device_info,
           least(%(anchor)s::timestamptz,
                 coalesce(v.actual_end_time, v.actual_start_time) + (2 + r5 * 90) * interval '1 second') AS recorded_at,
           v.created_by
    FROM (SELECT vv.*, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5
          FROM (SELECT * FROM visits WHERE actual_start_time IS NOT NULL AND caregiver_id IS NOT NULL
                ORDER BY visit_number OFFSET 0) vv
          OFFSET 0) v
    OFFSET 0
) e
ORDER BY service_date, visit_id;

-- step: evv_revisions
-- Hash chain: revision_hash = sha256(coalesce(previous_revision_hash, '') || new_values::text),
-- so the chain can be re-verified after a restore.
INSERT INTO evv_revisions (id, evv_record_id, revision_number, revision_type, changed_fields, previous_values,
    new_values, reason, revised_by, revised_at, revision_hash, previous_revision_hash, created_at, created_by,
    updated_at, updated_by, version)
SELECT pg_temp.uid('evvrev', e.id::text || ':' || n),
       e.id, n,
       CASE n WHEN 1 THEN 'CREATE' WHEN 2 THEN 'CLOCK_OUT' ELSE ch.correction_type END,
       CASE n WHEN 1 THEN CASE WHEN e.nrev = 1 AND e.clock_out_time IS NOT NULL
                               THEN ARRAY['clock_in_time', 'clock_out_time'] ELSE ARRAY['clock_in_time'] END
              WHEN 2 THEN ARRAY['clock_out_time', 'total_duration']
              ELSE ARRAY['clock_in_time'] END,
       CASE n WHEN 1 THEN NULL
              WHEN 2 THEN jsonb_build_object('clock_out_time', NULL, 'total_duration', NULL)
              ELSE jsonb_build_object('clock_in_time', e.c3_old_in) END,
       CASE n WHEN 1 THEN ch.nv1 WHEN 2 THEN ch.nv2 ELSE ch.nv3 END,
       CASE WHEN n = 3 THEN ch.correction_reason END,
       CASE WHEN n = 3 THEN e.updated_by ELSE e.created_by END,
       CASE n WHEN 1 THEN CASE WHEN e.nrev = 1 THEN e.recorded_at ELSE e.clock_in_time + interval '4 seconds' END
              WHEN 2 THEN e.recorded_at
              ELSE least(%(anchor)s::timestamptz,
                         e.recorded_at + (3 + pg_temp.hint('c3t' || e.id::text, 200)) * interval '1 hour') END,
       CASE n WHEN 1 THEN ch.h1 WHEN 2 THEN ch.h2 ELSE ch.h3 END,
       CASE n WHEN 1 THEN NULL WHEN 2 THEN ch.h1 ELSE ch.h2 END,
       CASE n WHEN 1 THEN e.clock_in_time ELSE e.recorded_at END,
       e.created_by,
       CASE n WHEN 1 THEN e.clock_in_time ELSE e.recorded_at END,
       e.created_by,
       1
FROM (SELECT r.*, pg_temp.evv_nrev(r.id, r.clock_out_time IS NOT NULL) AS nrev,
             r.clock_in_time - (5 + pg_temp.hint('c3o' || r.id::text, 40)) * interval '1 minute' AS c3_old_in
      FROM evv_records r ORDER BY r.id OFFSET 0) e
CROSS JOIN LATERAL (
    SELECT c.*,
           pg_temp.sha256hex(c.nv1::text) AS h1,
           pg_temp.sha256hex(pg_temp.sha256hex(c.nv1::text) || c.nv2::text) AS h2,
           pg_temp.sha256hex(pg_temp.sha256hex(pg_temp.sha256hex(c.nv1::text) || c.nv2::text) || c.nv3::text) AS h3
    FROM (SELECT
            CASE WHEN e.nrev = 1 THEN jsonb_build_object(
                     'clock_in_time', e.clock_in_time, 'clock_out_time', e.clock_out_time,
                     'verification_method', e.verification_method)
                 ELSE jsonb_build_object(
                     'clock_in_time', CASE WHEN e.nrev = 3 THEN e.c3_old_in ELSE e.clock_in_time END,
                     'clock_in_location', e.clock_in_location) END AS nv1,
            jsonb_build_object('clock_out_time', e.clock_out_time, 'total_duration', e.total_duration) AS nv2,
            jsonb_build_object('clock_in_time', e.clock_in_time, 'note', pg_temp.hpick(ARRAY[
                                   'Verified with client by phone.', 'Caregiver forgot to clock in on arrival.',
                                   'GPS drift confirmed, location accepted.', 'Telephony fallback used, approved.',
                                   'Time corrected per signed timesheet.'], 'c3n' || e.id::text)) AS nv3,
            pg_temp.hpick(ARRAY['CORRECTION', 'CORRECTION', 'AMENDMENT'], 'c3k' || e.id::text) AS correction_type,
            pg_temp.hpick(ARRAY['Caregiver forgot to clock in on arrival; corrected per supervisor review.',
                                'Mobile app offline; times entered from paper timesheet.',
                                'Clock-in recorded at wrong address due to GPS drift.',
                                'Payer requested amendment after audit.',
                                'Duplicate clock-in removed.'], 'c3r' || e.id::text) AS correction_reason
          OFFSET 0) c
    OFFSET 0
) ch
CROSS JOIN LATERAL generate_series(1, e.nrev) n
ORDER BY e.id, n;

-- step: care_plans
INSERT INTO care_plans (id, plan_number, organization_id, client_id, name, plan_type, status, medical_diagnosis,
    goals, interventions, frequency, effective_date, expiration_date, review_date, coordinator_id, approved_by,
    approved_at, notes, is_demo_data, created_at, created_by, updated_at, updated_by, version, deleted_at,
    deleted_by)
SELECT pg_temp.uidn('care_plan', i),
       'CP-' || pg_temp.pad(i, 7),
       c.organization_id, c.id,
       ptype_label || ' Plan - ' || c.first_name || ' ' || c.last_name,
       ptype,
       CASE WHEN c.status IN ('INQUIRY', 'PENDING_INTAKE') THEN 'DRAFT'
            WHEN c.status = 'DECEASED' THEN 'DISCONTINUED'
            WHEN c.status = 'DISCHARGED' THEN CASE WHEN r1 < 0.7 THEN 'COMPLETED' ELSE 'DISCONTINUED' END
            WHEN c.status IN ('ON_HOLD', 'INACTIVE') THEN 'ON_HOLD'
            WHEN eff + 365 < %(anchor)s::date AND r1 < 0.1 THEN 'EXPIRED'
            WHEN r1 < 0.05 THEN 'PENDING_APPROVAL'
            ELSE 'ACTIVE' END,
       array_remove(ARRAY[
           pg_temp.hpick(ARRAY['I10 Essential (primary) hypertension', 'E11.9 Type 2 diabetes mellitus without complications',
                               'F03.90 Unspecified dementia without behavioral disturbance',
                               'J44.9 Chronic obstructive pulmonary disease, unspecified',
                               'I50.9 Heart failure, unspecified', 'G20 Parkinson''s disease',
                               'G30.9 Alzheimer''s disease, unspecified'], 'dx1' || i),
           CASE WHEN pg_temp.hint('dx2n' || i, 10) < 7 THEN pg_temp.hpick(ARRAY[
                               'M17.9 Osteoarthritis of knee, unspecified', 'E78.5 Hyperlipidemia, unspecified',
                               'N18.3 Chronic kidney disease, stage 3', 'M81.0 Age-related osteoporosis',
                               'F32.9 Major depressive disorder, single episode', 'H54.7 Unspecified visual loss',
                               'I63.9 Cerebral infarction, unspecified'], 'dx2' || i) END,
           CASE WHEN pg_temp.hint('dx3n' || i, 10) < 4 THEN pg_temp.hpick(ARRAY[
                               'R26.81 Unsteadiness on feet', 'Z74.09 Other reduced mobility',
                               'R41.81 Age-related cognitive decline', 'Z91.81 History of falling',
                               'E66.9 Obesity, unspecified', 'R32 Unspecified urinary incontinence'], 'dx3' || i) END
       ]::text[], NULL),
       jsonb_build_array(
           jsonb_build_object('id', pg_temp.uid('goal', i || ':1'),
               'description', pg_temp.hpick(ARRAY['Maintain independence with ADLs', 'Prevent falls at home',
                   'Improve medication adherence to 95 percent', 'Maintain safe nutrition and hydration',
                   'Reduce hospital readmissions'], 'g1' || i),
               'target_date', eff + 90 + pg_temp.hint('g1d' || i, 180),
               'status', pg_temp.hpick(ARRAY['IN_PROGRESS', 'IN_PROGRESS', 'ACHIEVED', 'NOT_STARTED'], 'g1s' || i),
               'measure', 'Assessed monthly by RN; baseline score ' || (20 + pg_temp.hint('g1m' || i, 60))),
           jsonb_build_object('id', pg_temp.uid('goal', i || ':2'),
               'description', pg_temp.hpick(ARRAY['Client will participate in daily exercise',
                   'Client will remain in home setting', 'Caregiver will monitor skin integrity',
                   'Client will attend all medical appointments', 'Reduce social isolation'], 'g2' || i),
               'target_date', eff + 60 + pg_temp.hint('g2d' || i, 300),
               'status', pg_temp.hpick(ARRAY['IN_PROGRESS', 'ACHIEVED', 'NOT_STARTED'], 'g2s' || i))),
       jsonb_build_array(
           jsonb_build_object('id', pg_temp.uid('intv', i || ':1'), 'type', 'ADL_SUPPORT',
               'description', 'Assist with bathing ' || (2 + pg_temp.hint('iv1' || i, 5)) || 'x weekly',
               'assigned_role', 'CAREGIVER'),
           jsonb_build_object('id', pg_temp.uid('intv', i || ':2'), 'type', 'MEDICATION',
               'description', 'Medication reminders ' || pg_temp.hpick(ARRAY['AM', 'AM and PM', 'with meals'], 'iv2' || i),
               'assigned_role', 'CAREGIVER'),
           jsonb_build_object('id', pg_temp.uid('intv', i || ':3'), 'type', 'ASSESSMENT',
               'description', 'RN supervisory visit every ' || (30 + 30 * pg_temp.hint('iv3' || i, 3)) || ' days',
               'assigned_role', 'NURSE')),
       jsonb_build_object('visits_per_week', 1 + pg_temp.hint('fv' || i, 7),
                          'hours_per_visit', (ARRAY[1, 2, 2, 3, 4, 4, 6, 8])[1 + pg_temp.hint('fh' || i, 8)],
                          'days', to_jsonb(string_to_array(pg_temp.hpick(ARRAY['MON,WED,FRI', 'TUE,THU,SAT',
                                                  'MON,TUE,WED,THU,FRI', 'WED,SAT,SUN', 'MON,THU'], 'fd' || i), ','))),
       eff,
       eff + CASE WHEN pg_temp.hint('exp' || i, 2) = 0 THEN 180 ELSE 365 END,
       eff + 90,
       c.coordinator_id,
       CASE WHEN c.status NOT IN ('INQUIRY', 'PENDING_INTAKE') THEN c.coordinator_id END,
       CASE WHEN c.status NOT IN ('INQUIRY', 'PENDING_INTAKE')
            THEN least(%(anchor)s::timestamptz - interval '1 hour', eff::timestamptz + (9 + r2 * 8) * interval '1 hour') END,
       CASE WHEN r2 < 0.6 THEN 'Reviewed with ' || pg_temp.hpick(ARRAY['client', 'client and daughter', 'client and spouse',
            'family'], 'cpn' || i) || ' on ' || to_char(eff, 'MM/DD/YYYY') || '. ' || pg_temp.hpick(ARRAY[
            'Client prefers morning visits.', 'Uses walker at all times.', 'Diabetic diet, no added sugar.',
            'Hard of hearing, speak clearly.', 'Dog in home, friendly.', 'Key in lockbox, code on file.'], 'cpx' || i) END,
       c.is_demo_data,
       least(%(anchor)s::timestamptz - interval '2 hours', eff::timestamptz - (1 + r3 * 5) * interval '1 day'),
       c.coordinator_id,
       coalesce(c.deleted_at, least(%(anchor)s::timestamptz, greatest(eff::timestamptz, c.updated_at))),
       c.coordinator_id,
       1 + pg_temp.hint('cpv' || i, 6),
       c.deleted_at,
       c.deleted_by
FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3
      FROM generate_series(1, %(n_care_plans)s) i OFFSET 0) s
JOIN clients c ON c.id = pg_temp.uidn('client', mod(s.i - 1, %(n_clients)s) + 1),
LATERAL (SELECT coalesce(c.intake_date, c.created_at::date) + ((s.i - 1) / %(n_clients)s) * 200 AS eff,
                (ARRAY['PERSONAL_CARE', 'PERSONAL_CARE', 'SKILLED_NURSING', 'COMPANION', 'RESPITE'])
                    [1 + pg_temp.hint('pt' || s.i, 5)] AS ptype,
                (ARRAY['Personal Care', 'Personal Care', 'Skilled Nursing', 'Companion Care', 'Respite Care'])
                    [1 + pg_temp.hint('pt' || s.i, 5)] AS ptype_label) p
ORDER BY i;

-- step: certifications
INSERT INTO certifications (id, caregiver_id, organization_id, certification_type, certification_number,
    issuing_authority, issued_date, expiration_date, status, verified_by, verified_at, document_url,
    document_hash, metadata, is_demo_data, created_at, created_by, updated_at, updated_by, version,
    deleted_at, deleted_by)
SELECT pg_temp.uidn('cert', j),
       cg.id, cg.organization_id,
       ctype,
       upper(substr(ctype, 1, 3)) || '-' || pg_temp.digits('cn' || j, 8),
       CASE WHEN ctype IN ('CNA', 'HHA', 'LPN', 'RN') THEN (cg.address ->> 'state') || ' Board of Nursing'
            WHEN ctype IN ('CPR', 'FIRST_AID') THEN 'American Red Cross'
            WHEN ctype = 'TB_TEST' THEN 'County Health Department'
            WHEN ctype = 'DRIVERS_LICENSE' THEN (cg.address ->> 'state') || ' Department of Motor Vehicles'
            ELSE 'Internal Training' END,
       issued,
       issued + CASE WHEN ctype IN ('TB_TEST', 'DEMENTIA_CARE') THEN 365 ELSE 730 END,
       CASE WHEN r1 < 0.02 THEN 'REVOKED'
            WHEN cg.status IN ('APPLICANT', 'ONBOARDING') AND r1 < 0.5 THEN 'PENDING_VERIFICATION'
            WHEN issued + CASE WHEN ctype IN ('TB_TEST', 'DEMENTIA_CARE') THEN 365 ELSE 730 END < %(anchor)s::date THEN 'EXPIRED'
            WHEN issued + CASE WHEN ctype IN ('TB_TEST', 'DEMENTIA_CARE') THEN 365 ELSE 730 END < %(anchor)s::date + 60 THEN 'EXPIRING_SOON'
            ELSE 'ACTIVE' END,
       cg.created_by,
       issued::timestamptz + (1 + r2 * 10) * interval '1 day',
       's3://care-commons-documents/' || cg.organization_id || '/caregivers/' || cg.id || '/certifications/'
           || pg_temp.hex('doc' || j, 24) || '.pdf',
       pg_temp.sha256hex('document' || j || ':' || %(seed)s),
       jsonb_build_object('ceu_hours', floor(r2 * 24)::integer,
                          'verification_source', pg_temp.pick(ARRAY['STATE_REGISTRY', 'PRIMARY_SOURCE', 'UPLOAD'], r3),
                          'file_size_bytes', 40000 + floor(r3 * 900000)::integer,
                          'reminder_sent', r1 > 0.5),
       cg.is_demo_data,
       issued::timestamptz + (r2 * 5) * interval '1 day' + interval '10 hours',
       cg.created_by,
       coalesce(cg.deleted_at, issued::timestamptz + (1 + r2 * 10) * interval '1 day'),
       cg.created_by,
       1 + floor(r3 * 3)::integer,
       cg.deleted_at,
       cg.deleted_by
FROM (SELECT j, random() AS r1, random() AS r2, random() AS r3, random() AS r4
      FROM generate_series(1, %(n_certifications)s) j OFFSET 0) s
JOIN caregivers cg ON cg.id = pg_temp.uidn('caregiver', mod(s.j - 1, %(n_caregivers)s) + 1),
LATERAL (SELECT (ARRAY['CNA', 'CPR', 'TB_TEST', 'FIRST_AID', 'HHA', 'DRIVERS_LICENSE', 'DEMENTIA_CARE',
                       'BACKGROUND_CHECK', 'LPN', 'RN'])
                    [1 + mod(pg_temp.hint('ct' || cg.id::text, 10) + (s.j - 1) / %(n_caregivers)s, 10)] AS ctype,
                least(%(anchor)s::date - 12,
                      cg.hire_date - 30 + floor(s.r4 * (%(anchor)s::date - cg.hire_date + 30))::integer) AS issued) x
ORDER BY j;

-- step: family_members
INSERT INTO family_members (id, client_id, organization_id, first_name, last_name, relationship, email, phone,
    address, is_primary_contact, is_emergency_contact, has_portal_access, portal_last_login_at,
    notification_preferences, permissions, status, is_demo_data, created_at, created_by, updated_at,
    updated_by, version, deleted_at, deleted_by)
SELECT pg_temp.uidn('family', j),
       c.id, c.organization_id,
       fn, ln, rel,
       CASE WHEN r1 < 0.8 THEN lower(fn || '.' || ln) || pg_temp.hint('fme' || j, 1000) || '@'
                               || pg_temp.pick(ARRAY['gmail.com', 'yahoo.com', 'outlook.com', 'icloud.com'], r2) END,
       pg_temp.phone('fm' || j),
       CASE WHEN r3 < 0.3 THEN c.primary_address
            ELSE pg_temp.address(1 + pg_temp.hint('fmc' || j, 8), 'fm' || j) END,
       ord = 0, ord = 0 OR r2 < 0.3, portal,
       CASE WHEN portal THEN %(anchor)s::timestamptz - (r3 * r3 * 200) * interval '1 day' END,
       jsonb_build_object('email', r1 < 0.8, 'sms', r2 < 0.6,
                          'visit_reminders', r3 < 0.7, 'care_plan_updates', r1 < 0.5,
                          'incident_alerts', true, 'language', CASE WHEN r2 < 0.1 THEN 'es' ELSE 'en' END),
       CASE WHEN portal THEN ARRAY['VIEW_SCHEDULE', 'VIEW_VISIT_NOTES', 'MESSAGE_CARE_TEAM']
                        || CASE WHEN ord = 0 THEN ARRAY['VIEW_CARE_PLAN', 'VIEW_BILLING'] ELSE ARRAY[]::text[] END
            ELSE ARRAY[]::text[] END::varchar(50)[],
       CASE WHEN c.deleted_at IS NOT NULL OR r4 < 0.03 THEN 'REVOKED'
            WHEN portal AND r4 < 0.1 THEN 'PENDING_INVITE'
            WHEN c.status IN ('DISCHARGED', 'DECEASED') THEN 'INACTIVE'
            ELSE 'ACTIVE' END,
       c.is_demo_data,
       least(%(anchor)s::timestamptz - interval '1 hour', c.created_at + (1 + r4 * 30) * interval '1 day'),
       c.created_by,
       coalesce(c.deleted_at, least(%(anchor)s::timestamptz, c.created_at + (1 + r4 * 30 + r1 * 300) * interval '1 day')),
       c.updated_by,
       1 + floor(r2 * 4)::integer,
       CASE WHEN c.deleted_at IS NOT NULL THEN c.deleted_at
            WHEN r4 < 0.03 THEN least(%(anchor)s::timestamptz, c.created_at + (40 + r3 * 900) * interval '1 day') END,
       CASE WHEN c.deleted_at IS NOT NULL OR r4 < 0.03 THEN c.coordinator_id END
FROM (SELECT j, (j - 1) / %(n_clients)s AS ord, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
             random() AS r5
      FROM generate_series(1, %(n_family_members)s) j OFFSET 0) s
JOIN clients c ON c.id = pg_temp.uidn('client', mod(s.j - 1, %(n_clients)s) + 1),
LATERAL (SELECT pg_temp.hpick(pg_temp.first_names(), 'ffn' || j) AS fn,
                CASE WHEN s.r5 < 0.7 THEN c.last_name ELSE pg_temp.hpick(pg_temp.last_names(), 'fln' || j) END AS ln,
                pg_temp.pick(ARRAY['Daughter', 'Son', 'Spouse', 'Daughter', 'Son', 'Sibling', 'Grandchild',
                                   'Niece', 'Nephew', 'Legal Guardian', 'Friend'], s.r5) AS rel,
                s.r1 < 0.45 AS portal) x
ORDER BY j;

-- step: billing_invoices
-- One invoice per client and month of completed, not deleted visits.
INSERT INTO billing_invoices (id, invoice_number, organization_id, branch_id, client_id, billing_period_start,
    billing_period_end, payer_type, payer_name, visit_ids, line_items, total_hours, subtotal, adjustments,
    total_amount, amount_paid, status, due_date, submitted_at, paid_at, claim_number, is_demo_data,
    created_at, created_by, updated_at, updated_by, version, deleted_at, deleted_by)
SELECT pg_temp.uid('invoice', client_id::text || ':' || period::text),
       'INV-' || to_char(period, 'YYYYMM') || '-' || pg_temp.pad(rn, 7),
       organization_id, branch_id, client_id,
       period, (period + interval '1 month' - interval '1 day')::date,
       payer_type, payer_name,
       visit_ids, line_items, total_hours, subtotal, adjustments, subtotal + adjustments,
       CASE status WHEN 'PAID' THEN subtotal + adjustments
                   WHEN 'PARTIALLY_PAID' THEN round((subtotal + adjustments) * (0.4 + 0.5 * r2)::numeric, 2)
                   ELSE 0 END,
       status,
       (period + interval '2 months')::date,
       CASE WHEN status NOT IN ('DRAFT', 'PENDING')
            THEN least(%(anchor)s::timestamptz, (period + interval '1 month')::timestamptz + (2 + r3 * 5) * interval '1 day') END,
       CASE WHEN status IN ('PAID', 'PARTIALLY_PAID')
            THEN least(%(anchor)s::timestamptz, (period + interval '1 month')::timestamptz + (14 + r3 * 40) * interval '1 day') END,
       CASE WHEN status NOT IN ('DRAFT', 'PENDING') THEN 'CLM' || pg_temp.digits('clm' || client_id::text || period::text, 11) END,
       demo,
       least(%(anchor)s::timestamptz, (period + interval '1 month')::timestamptz + (r3 * 2 + 0.3) * interval '1 day'),
       creator,
       least(%(anchor)s::timestamptz, (period + interval '1 month')::timestamptz + (2 + r3 * 60) * interval '1 day'),
       creator,
       CASE status WHEN 'DRAFT' THEN 1 WHEN 'PENDING' THEN 2 WHEN 'SUBMITTED' THEN 3 ELSE 4 END,
       CASE WHEN status = 'VOID' AND r2 < 0.5
            THEN least(%(anchor)s::timestamptz, (period + interval '1 month')::timestamptz + (30 + r3 * 90) * interval '1 day') END,
       CASE WHEN status = 'VOID' AND r2 < 0.5 THEN creator END
FROM (
    SELECT a.*, row_number() OVER (ORDER BY a.period, a.client_id) AS rn,
           CASE WHEN a.period >= date_trunc('month', %(anchor)s::date) THEN 'DRAFT'
                WHEN a.period >= date_trunc('month', %(anchor)s::date) - interval '1 month' THEN
                    CASE WHEN r1 < 0.4 THEN 'PENDING' ELSE 'SUBMITTED' END
                WHEN a.period >= date_trunc('month', %(anchor)s::date) - interval '3 months' THEN
                    CASE WHEN r1 < 0.3 THEN 'SUBMITTED' WHEN r1 < 0.4 THEN 'PARTIALLY_PAID' ELSE 'PAID' END
                WHEN r1 < 0.86 THEN 'PAID' WHEN r1 < 0.91 THEN 'PARTIALLY_PAID'
                WHEN r1 < 0.95 THEN 'DENIED' WHEN r1 < 0.98 THEN 'VOID' ELSE 'SUBMITTED' END AS status,
           CASE WHEN r1 >= 0.91 AND r1 < 0.95 THEN 0::numeric
                ELSE -round((a.subtotal * (CASE WHEN r2 < 0.15 THEN 0.05 ELSE 0 END))::numeric, 2) END AS adjustments
    FROM (
        SELECT agg.*, random() AS r1, random() AS r2, random() AS r3
        FROM (
            SELECT v.client_id, v.organization_id, v.branch_id,
                   date_trunc('month', v.scheduled_date)::date AS period,
                   max(c.insurance -> 'primary' ->> 'payer_type') AS payer_type,
                   max(c.insurance -> 'primary' ->> 'payer_name') AS payer_name,
                   bool_or(v.is_demo_data) AS demo,
                   max(c.coordinator_id::text)::uuid AS creator,
                   array_agg(v.id ORDER BY v.scheduled_date, v.visit_number) AS visit_ids,
                   jsonb_agg(jsonb_build_object('date', v.scheduled_date,
                                                'code', v.service_type_code, 'hours', v.billable_hours,
                                                'amount', round(v.billable_hours * pg_temp.rate(v.service_type_code), 2))
                             ORDER BY v.scheduled_date, v.visit_number) AS line_items,
                   sum(v.billable_hours) AS total_hours,
                   sum(round(v.billable_hours * pg_temp.rate(v.service_type_code), 2)) AS subtotal
            FROM visits v JOIN clients c ON c.id = v.client_id
            WHERE v.status IN ('COMPLETED', 'INCOMPLETE') AND v.deleted_at IS NULL AND v.billable_hours IS NOT NULL
            GROUP BY v.client_id, v.organization_id, v.branch_id, date_trunc('month', v.scheduled_date)
            ORDER BY period, v.client_id
        ) agg
        OFFSET 0
    ) a
) b
ORDER BY rn;

-- step: audit_events
INSERT INTO audit_events (event_id, "timestamp", user_id, organization_id, event_type, resource, resource_id,
    action, result, metadata, ip_address, user_agent)
SELECT pg_temp.uidn('audit', g),
       ts,
       CASE WHEN action = 'LOGIN' AND result <> 'SUCCESS' AND r_ip < 0.5 THEN NULL ELSE uid END,
       pg_temp.uidn('org', o),
       event_type, resource, resource_id, action, result,
       jsonb_strip_nulls(jsonb_build_object(
           'request_id', pg_temp.hex('req' || g, 16),
           'status', CASE result WHEN 'SUCCESS' THEN CASE method WHEN 'POST' THEN 201 ELSE 200 END
                                 WHEN 'DENIED' THEN 403
                                 ELSE (ARRAY[400, 401, 404, 409, 422, 500])[1 + floor(r_dur * 6)::integer] END,
           'ms', (4 + floor(power(r_dur, 3) * 2500))::integer,
           'changed', CASE WHEN action IN ('UPDATE', 'CREATE') THEN
               to_jsonb(ARRAY[pg_temp.pick(ARRAY['status', 'notes', 'scheduled_start_time', 'caregiver_id',
                                                 'address', 'phone', 'tasks', 'billable_hours'], r_res),
                              pg_temp.pick(ARRAY['updated_by', 'tags', 'emergency_contacts', 'insurance',
                                                 'goals', 'line_items'], r_dur)]) END,
           'phi', CASE WHEN event_type = 'PHI_ACCESS' THEN
               to_jsonb(ARRAY['date_of_birth', pg_temp.pick(ARRAY['ssn', 'insurance', 'allergies', 'medical_diagnosis',
                                                                  'primary_address'], r_res)]) END,
           'error', CASE WHEN result = 'FAILURE' THEN pg_temp.pick(ARRAY['VALIDATION_ERROR', 'NOT_FOUND', 'CONFLICT',
                                                                         'INVALID_CREDENTIALS', 'TIMEOUT'], r_dur) END,
           'reason', CASE WHEN result = 'DENIED' THEN 'insufficient_permissions' END)),
       CASE WHEN r_ip < 0.05 THEN '2600:1700::'::inet + floor(r_ua * 1e15)::bigint
            WHEN r_ip < 0.55 THEN '10.0.0.0'::inet + floor(r_ip * 16777215)::bigint
            ELSE '0.0.0.0'::inet + (16777216 + floor(r_ua * 3000000000))::bigint END,
       CASE WHEN event_type NOT IN ('AUTHENTICATION', 'EVV_EVENT') THEN NULL
            WHEN resource = 'evv_record'
            THEN 'CareCommonsMobile/3.' || floor(r_ua * 20)::integer || ' (' || pg_temp.pick(ARRAY['Android 12', 'Android 13',
                 'Android 14', 'iOS 16.6', 'iOS 17.2', 'iOS 17.5'], r_ua) || ') okhttp/4.' || floor(r_dur * 12)::integer
            ELSE pg_temp.pick(ARRAY[
                'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/',
                'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/',
                'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Edg/',
                'Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/',
                'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/'], r_ua)
                 || (100 + floor(r_ua * 31))::integer || '.0.' || (5000 + floor(r_dur * 1400))::integer || '.'
                 || floor(r_res * 200)::integer END
FROM (
    SELECT s.*, k.*,
           pg_temp.uidn('user', s.u) AS uid,
           CASE WHEN k.event_type = 'AUTHORIZATION' THEN CASE WHEN s.r_result < 0.8 THEN 'DENIED' ELSE 'SUCCESS' END
                WHEN s.r_result < 0.965 THEN 'SUCCESS' WHEN s.r_result < 0.99 THEN 'FAILURE' ELSE 'DENIED' END AS result,
           CASE k.resource
                WHEN 'client' THEN pg_temp.uidn('client', 1 + floor(s.r_res * %(n_clients)s)::integer)
                WHEN 'visit' THEN pg_temp.uidn('visit', 1 + floor(s.r_res * %(n_visits)s)::integer)
                WHEN 'evv_record' THEN pg_temp.uid('evv', pg_temp.uidn('visit', 1 + floor(s.r_res * %(n_visits)s)::integer)::text)
                WHEN 'caregiver' THEN pg_temp.uidn('caregiver', 1 + floor(s.r_res * %(n_caregivers)s)::integer)
                WHEN 'care_plan' THEN pg_temp.uidn('care_plan', 1 + floor(s.r_res * %(n_care_plans)s)::integer)
                WHEN 'user' THEN pg_temp.uidn('user', 1 + floor(s.r_res * %(n_users)s)::integer)
                WHEN 'organization' THEN pg_temp.uidn('org', s.o)
                WHEN 'billing_invoice' THEN pg_temp.uid('invoice-ref', s.g::text)
                WHEN 'session' THEN pg_temp.uid('session', s.u || ':' || s.ts::date)
           END AS resource_id
    FROM (
        SELECT q.*, pg_temp.user_in_org(q.o, q.r_user) AS u
        FROM (
            SELECT g,
                   date_trunc('milliseconds', %(anchor)s::timestamptz
                       - (%(span)s * (2 - sqrt(1 + 3 * random()))) * interval '1 day') AS ts,
                   1 + floor(random() * %(n_orgs)s)::integer AS o,
                   random() AS r_user, random() AS r_kind, random() AS r_res, random() AS r_result,
                   random() AS r_ip, random() AS r_ua, random() AS r_dur
            FROM generate_series(1, %(n_audit_events)s) g OFFSET 0
        ) q
        OFFSET 0
    ) s
    CROSS JOIN LATERAL (
        SELECT kinds.event_type, kinds.resource, kinds.action, kinds.method, kinds.path
        FROM (VALUES
            (1, 'PHI_ACCESS', 'client', 'READ', 'GET', '/api/v1/clients/'),
            (2, 'DATA_ACCESS', 'visit', 'READ', 'GET', '/api/v1/visits/'),
            (3, 'DATA_MODIFICATION', 'visit', 'UPDATE', 'PATCH', '/api/v1/visits/'),
            (4, 'DATA_MODIFICATION', 'visit', 'CREATE', 'POST', '/api/v1/visits/'),
            (5, 'EVV_EVENT', 'evv_record', 'CLOCK_IN', 'POST', '/api/v1/evv/clock-in/'),
            (6, 'EVV_EVENT', 'evv_record', 'CLOCK_OUT', 'POST', '/api/v1/evv/clock-out/'),
            (7, 'AUTHENTICATION', 'session', 'LOGIN', 'POST', '/api/v1/auth/login/'),
            (8, 'AUTHENTICATION', 'session', 'LOGOUT', 'POST', '/api/v1/auth/logout/'),
            (9, 'PHI_ACCESS', 'care_plan', 'READ', 'GET', '/api/v1/care-plans/'),
            (10, 'DATA_MODIFICATION', 'care_plan', 'UPDATE', 'PUT', '/api/v1/care-plans/'),
            (11, 'DATA_ACCESS', 'caregiver', 'READ', 'GET', '/api/v1/caregivers/'),
            (12, 'DATA_MODIFICATION', 'caregiver', 'UPDATE', 'PATCH', '/api/v1/caregivers/'),
            (13, 'DATA_MODIFICATION', 'client', 'UPDATE', 'PATCH', '/api/v1/clients/'),
            (14, 'EXPORT', 'billing_invoice', 'EXPORT', 'GET', '/api/v1/billing/invoices/'),
            (15, 'DATA_MODIFICATION', 'billing_invoice', 'UPDATE', 'PATCH', '/api/v1/billing/invoices/'),
            (16, 'AUTHORIZATION', 'client', 'READ', 'GET', '/api/v1/clients/'),
            (17, 'CONFIGURATION', 'organization', 'UPDATE', 'PUT', '/api/v1/organizations/'),
            (18, 'DATA_ACCESS', 'user', 'READ', 'GET', '/api/v1/users/')
        ) AS kinds(n, event_type, resource, action, method, path)
        WHERE kinds.n = (ARRAY[1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 5, 5, 5, 6, 6, 6, 7, 7, 8, 9, 9, 10, 11, 11,
                               12, 13, 14, 15, 16, 17, 18])[1 + floor(s.r_kind * 34)::integer]
    ) k
    OFFSET 0
) e
ORDER BY ts, g;
