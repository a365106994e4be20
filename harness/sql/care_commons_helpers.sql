-- Session-local helpers for the synthetic data generator (schema pg_temp: they
-- vanish with the session and are never part of the database, its dumps or its
-- fingerprint). Parameters are bound by harness/synthetic.py with psycopg2
-- (pyformat placeholders), so this file must not contain a bare percent sign.
--
-- Deterministic by construction: identifiers and string content come from keyed
-- hashes of (seed, kind, key); statistical choices come from random() after setseed().

-- Keyed 64-bit hashes come from hashtextextended() (the built-in used by hash
-- partitioning, hence stable across releases): ~20x cheaper than md5(), whose
-- per-call digest context set-up dominated generation time.
--
-- Helpers that compute are declared STABLE (|| on non-text values and
-- jsonb_build_object are only stable, and an IMMUTABLE declaration over a stable
-- body blocks inlining) and use their arguments in ways the planner accepts for
-- inlining; the constant lists below are IMMUTABLE and fold to constants.

-- 16 hex digits derived from (seed, salt, key).
CREATE FUNCTION pg_temp.h16(k text, salt integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT lpad(to_hex(hashtextextended(k, %(seed)s::bigint * 64 + salt)), 16, '0')
$$;

-- A version-4-shaped UUID derived from (seed, kind, key).
CREATE FUNCTION pg_temp.uid(kind text, k text) RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT overlay(overlay(pg_temp.h16(kind || ':' || k, 1) || pg_temp.h16(kind || ':' || k, 2)
                           PLACING '4' FROM 13 FOR 1)
                   PLACING substr('89ab', 1 + mod(length(kind), 4), 1) FROM 17 FOR 1)::uuid
$$;

CREATE FUNCTION pg_temp.uidn(kind text, i bigint) RETURNS uuid
LANGUAGE sql STABLE AS $$ SELECT pg_temp.uid(kind, i::text) $$;

-- Hash-derived integer in [0, n).
CREATE FUNCTION pg_temp.hint(k text, n integer) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT mod(hashtextextended(k, %(seed)s::bigint * 64 + 3) & 9223372036854775807, n)::integer
$$;

-- n hex characters (n <= 64) derived from a key.
CREATE FUNCTION pg_temp.hex(k text, n integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN n <= 16 THEN substr(pg_temp.h16(k, 4), 1, n)
                WHEN n <= 32 THEN substr(pg_temp.h16(k, 4) || pg_temp.h16(k, 5), 1, n)
                ELSE substr(pg_temp.h16(k, 4) || pg_temp.h16(k, 5) || pg_temp.h16(k, 6) || pg_temp.h16(k, 7), 1, n)
           END
$$;

-- n decimal digits (n <= 32) derived from a key.
CREATE FUNCTION pg_temp.digits(k text, n integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT translate(pg_temp.hex('d:' || k, n), 'abcdef', '314159')
$$;

-- Base64 "ciphertext" (IV and 32 bytes), as the app stores encrypted fields.
CREATE FUNCTION pg_temp.enc(k text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT 'enc:v1:' || encode(decode(pg_temp.hex('iv' || k, 24), 'hex'), 'base64') || ':'
           || encode(decode(pg_temp.hex('ct' || k, 64), 'hex'), 'base64')
$$;

CREATE FUNCTION pg_temp.phone(k text) RETURNS varchar
LANGUAGE sql STABLE AS $$
    SELECT '(' || (201 + pg_temp.hint('pa' || k, 789))::text || ') ' || (201 + pg_temp.hint('pb' || k, 789))::text
           || '-' || pg_temp.digits('pc' || k, 4)
$$;

CREATE FUNCTION pg_temp.pick(arr text[], r double precision) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT arr[1 + floor(r * cardinality(arr))::integer] $$;

CREATE FUNCTION pg_temp.hpick(arr text[], k text) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT arr[1 + pg_temp.hint(k, cardinality(arr))] $$;

-- Entity relationships, all index arithmetic (1-based indexes) -------------------
-- branch j belongs to organization mod(j-1, n_orgs)+1; client i and caregiver k
-- belong to branch mod(i-1, n_branches)+1; user u to organization mod(u-1, n_orgs)+1.
CREATE FUNCTION pg_temp.org_of_branch(j integer) RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT mod(j - 1, %(n_orgs)s) + 1 $$;

CREATE FUNCTION pg_temp.branch_of(i integer) RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT mod(i - 1, %(n_branches)s) + 1 $$;

CREATE FUNCTION pg_temp.user_in_org(o integer, r double precision) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT o + %(n_orgs)s * floor(r * ((%(n_users)s - o) / %(n_orgs)s + 1))::integer
$$;

CREATE FUNCTION pg_temp.branch_in_org(o integer, r double precision) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT o + %(n_orgs)s * floor(r * ((%(n_branches)s - o) / %(n_orgs)s + 1))::integer
$$;

CREATE FUNCTION pg_temp.caregiver_in_branch(b integer, r double precision) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT b + %(n_branches)s * floor(r * ((%(n_caregivers)s - b) / %(n_branches)s + 1))::integer
$$;

CREATE FUNCTION pg_temp.city_of_org(o integer) RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT mod(o - 1, 8) + 1 $$;

-- Reference lists ----------------------------------------------------------------
CREATE FUNCTION pg_temp.first_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 'James','Mary','Robert','Patricia','John','Jennifer','Michael','Linda','David','Elizabeth','William',
 'Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Charles','Karen','Christopher','Lisa',
 'Daniel','Nancy','Matthew','Betty','Anthony','Margaret','Mark','Sandra','Donald','Ashley','Steven',
 'Dorothy','Paul','Kimberly','Andrew','Emily','Joshua','Donna','Kenneth','Michelle','Kevin','Carol',
 'Brian','Amanda','George','Melissa','Timothy','Deborah','Ronald','Stephanie','Edward','Rebecca','Jason',
 'Sharon','Jeffrey','Laura','Ryan','Cynthia','Jacob','Kathleen','Gary','Amy','Nicholas','Angela','Eric',
 'Shirley','Jonathan','Anna','Stephen','Brenda','Larry','Pamela','Justin','Emma','Scott','Nicole','Brandon',
 'Helen','Benjamin','Samantha','Samuel','Katherine','Gregory','Christine','Alexander','Debra','Frank',
 'Rachel','Raymond','Carolyn','Jack','Janet','Dennis','Catherine','Jerry','Maria','Tyler','Heather',
 'Aaron','Diane','Jose','Ruth','Adam','Julie','Nathan','Olivia','Henry','Joyce','Douglas','Virginia',
 'Zachary','Victoria','Peter','Kelly','Kyle','Lauren','Ethan','Christina','Walter','Joan','Noah','Evelyn',
 'Jeremy','Judith','Christian','Megan','Keith','Andrea','Roger','Cheryl','Terry','Hannah','Gerald','Jacqueline',
 'Harold','Martha','Sean','Gloria','Austin','Teresa','Carl','Ann','Arthur','Sara','Lawrence','Madison',
 'Dylan','Frances','Jesse','Kathryn','Jordan','Janice','Bryan','Jean','Billy','Abigail','Joe','Alice',
 'Bruce','Judy','Gabriel','Sophia','Logan','Grace','Albert','Denise','Willie','Amber','Alan','Doris',
 'Juan','Marilyn','Wayne','Danielle','Elijah','Beverly','Randy','Isabella','Roy','Theresa','Vincent',
 'Diana','Ralph','Natalie','Eugene','Brittany','Russell','Charlotte','Bobby','Marie','Mason','Kayla',
 'Philip','Alexis','Louis','Lori','Guadalupe','Rosa','Mei','Hiroshi','Aaliyah','DeShawn','Priya','Ahmed',
 'Svetlana','Kwame','Ngozi','Thanh','Lakshmi','Mateo','Yolanda','Esperanza','Imani','Tomasz','Oksana'
]::text[] $$;

CREATE FUNCTION pg_temp.last_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 'Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez','Hernandez',
 'Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin','Lee','Perez','Thompson',
 'White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson','Walker','Young','Allen','King','Wright',
 'Scott','Torres','Nguyen','Hill','Flores','Green','Adams','Nelson','Baker','Hall','Rivera','Campbell',
 'Mitchell','Carter','Roberts','Gomez','Phillips','Evans','Turner','Diaz','Parker','Cruz','Edwards',
 'Collins','Reyes','Stewart','Morris','Morales','Murphy','Cook','Rogers','Gutierrez','Ortiz','Morgan',
 'Cooper','Peterson','Bailey','Reed','Kelly','Howard','Ramos','Kim','Cox','Ward','Richardson','Watson',
 'Brooks','Chavez','Wood','James','Bennett','Gray','Mendoza','Ruiz','Hughes','Price','Alvarez','Castillo',
 'Sanders','Patel','Myers','Long','Ross','Foster','Jimenez','Powell','Jenkins','Perry','Russell','Sullivan',
 'Bell','Coleman','Butler','Henderson','Barnes','Gonzales','Fisher','Vasquez','Simmons','Romero','Jordan',
 'Patterson','Alexander','Hamilton','Graham','Reynolds','Griffin','Wallace','Moreno','West','Cole','Hayes',
 'Bryant','Herrera','Gibson','Ellis','Tran','Medina','Aguilar','Stevens','Murray','Ford','Castro','Marshall',
 'Owens','Harrison','Fernandez','McDonald','Woods','Washington','Kennedy','Wells','Vargas','Henry','Chen',
 'Freeman','Webb','Tucker','Guzman','Burns','Crawford','Olson','Simpson','Porter','Hunter','Gordon','Mendez',
 'Silva','Shaw','Snyder','Mason','Dixon','Munoz','Hunt','Hicks','Holmes','Palmer','Wagner','Black','Robertson',
 'Boyd','Rose','Stone','Salazar','Fox','Warren','Mills','Meyer','Rice','Schmidt','Garza','Daniels','Ferguson',
 'Nichols','Stephens','Soto','Weaver','Ryan','Gardner','Payne','Grant','Dunn','Kowalski','Okafor','Nakamura',
 'Abernathy','Lindqvist','Oyelaran','Castellanos','Petrovic','Yamamoto','Fitzgerald','Delacroix','Haddad'
]::text[] $$;

CREATE FUNCTION pg_temp.streets() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 'Oak','Maple','Cedar','Pine','Elm','Washington','Lake','Hill','Park','Main','Sunset','Ridge','Walnut',
 'Willow','Church','Highland','Meadow','Forest','River','Spring','Chestnut','Jefferson','Lincoln','Madison',
 'Franklin','Jackson','Adams','Cherry','Hickory','Birch','Magnolia','Dogwood','Sycamore','Laurel','Mill',
 'Valley','Prospect','Center','Union','Broad','Liberty','Orchard','Greenwood','Fairview','Woodland','Creek',
 'Harbor','Summit','Pleasant','Heritage','Bluebonnet','Juniper','Aspen','Cottonwood','Mesquite','Peachtree'
]::text[] $$;

CREATE FUNCTION pg_temp.street_types() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 'St','Ave','Rd','Dr','Ln','Blvd','Ct','Way','Pl','Cir','Trl','Pkwy'
]::text[] $$;

-- Eight service areas: city, state, ZIP prefix, latitude, longitude, time zone.
CREATE FUNCTION pg_temp.city_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 'Columbus','Austin','Denver','Sacramento','Phoenix','Tampa','Minneapolis','Raleigh']::text[] $$;
CREATE FUNCTION pg_temp.city_states() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 'OH','TX','CO','CA','AZ','FL','MN','NC']::text[] $$;
CREATE FUNCTION pg_temp.city_zips() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 '432','787','802','958','850','336','554','276']::text[] $$;
CREATE FUNCTION pg_temp.city_lat() RETURNS numeric[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 39.9612, 30.2672, 39.7392, 38.5816, 33.4484, 27.9506, 44.9778, 35.7796]::numeric[] $$;
CREATE FUNCTION pg_temp.city_lng() RETURNS numeric[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 -82.9988, -97.7431, -104.9903, -121.4944, -112.0740, -82.4572, -93.2650, -78.6382]::numeric[] $$;
CREATE FUNCTION pg_temp.city_tz() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
 'America/New_York','America/Chicago','America/Denver','America/Los_Angeles','America/Phoenix',
 'America/New_York','America/Chicago','America/New_York']::text[] $$;

-- A street address in service area `city`, derived from key k.
CREATE FUNCTION pg_temp.address(city integer, k text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'line1', (100 + pg_temp.hint('an' || k, 19800))::text || ' '
                 || pg_temp.hpick(pg_temp.streets(), 'as' || k) || ' '
                 || pg_temp.hpick(pg_temp.street_types(), 'at' || k),
        'line2', CASE WHEN pg_temp.hint('au' || k, 5) = 0
                      THEN 'Apt ' || (1 + pg_temp.hint('aa' || k, 480))::text END,
        'city', (pg_temp.city_names())[city],
        'state', (pg_temp.city_states())[city],
        'postal_code', (pg_temp.city_zips())[city] || lpad(pg_temp.hint('az' || k, 100)::text, 2, '0'),
        'country', 'US',
        'latitude', round((pg_temp.city_lat())[city] + (pg_temp.hint('ay' || k, 300000) - 150000) / 1000000.0, 6),
        'longitude', round((pg_temp.city_lng())[city] + (pg_temp.hint('ax' || k, 300000) - 150000) / 1000000.0, 6)
    )
$$;

-- A "$2b$10$..." bcrypt-shaped password hash.
CREATE FUNCTION pg_temp.bcrypt(k text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT '$2b$10$' || substr(translate(encode(decode(pg_temp.hex('pw' || k, 64) || pg_temp.hex('pw2' || k, 16), 'hex'),
                                                'base64'), '+/=', './'), 1, 53)
$$;

-- Number of revisions of an EVV record: 1 = created complete at clock-out,
-- 2 = clock-in then clock-out, 3 = plus a supervisor correction.
CREATE FUNCTION pg_temp.evv_nrev(id uuid, has_clock_out boolean) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN NOT has_clock_out THEN 1
                WHEN pg_temp.hint('nrev' || id::text, 1000) < 50 THEN 3
                WHEN pg_temp.hint('nrev' || id::text, 1000) < 430 THEN 2
                ELSE 1 END
$$;

CREATE FUNCTION pg_temp.sha256hex(t text) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT encode(sha256(convert_to(t, 'UTF8')), 'hex') $$;

CREATE FUNCTION pg_temp.org_name(o integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT (ARRAY['Sunrise Home Care', 'Harbor Home Health', 'Evergreen Care Partners', 'Comfort Hands Collective',
                  'Golden Years Home Services', 'BrightPath Home Health', 'Heartland Caregivers',
                  'Tranquil Living Home Care', 'Pinnacle Home Health', 'Guardian In-Home Care',
                  'Compass Senior Care', 'Silver Oak Home Health'])[1 + mod(o - 1, 12)]
           || CASE WHEN o > 12 THEN ' ' || ((o - 1) / 12 + 1)::text ELSE '' END
           || ' of ' || (pg_temp.city_names())[pg_temp.city_of_org(o)]
$$;

CREATE FUNCTION pg_temp.org_domain(o integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT lower(regexp_replace(split_part(pg_temp.org_name(o), ' of ', 1), '[^A-Za-z0-9]', '', 'g')) || '.com'
$$;

-- Primary payer of client i (used by clients.insurance and billing_invoices).
CREATE FUNCTION pg_temp.payer_type(i integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN pg_temp.hint('payer' || i, 100) < 45 THEN 'MEDICAID'
                WHEN pg_temp.hint('payer' || i, 100) < 70 THEN 'MEDICARE'
                WHEN pg_temp.hint('payer' || i, 100) < 80 THEN 'PRIVATE_INSURANCE'
                WHEN pg_temp.hint('payer' || i, 100) < 90 THEN 'PRIVATE_PAY'
                WHEN pg_temp.hint('payer' || i, 100) < 95 THEN 'VA'
                ELSE 'LONG_TERM_CARE' END
$$;

-- Hourly billing rate by HCPCS service code.
CREATE FUNCTION pg_temp.rate(code text) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT CASE code WHEN 'T1019' THEN 27.84 WHEN 'S5125' THEN 24.60 WHEN 'S5130' THEN 22.16
                     WHEN 'S5150' THEN 25.40 WHEN 'T1030' THEN 68.00 WHEN 'S5135' THEN 21.12
                     ELSE 26.00 END
$$;

-- Zero-padded number that never truncates (lpad would cut longer numbers).
CREATE FUNCTION pg_temp.pad(i bigint, n integer) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT lpad(i::text, greatest(n, length(i::text)), '0') $$;
