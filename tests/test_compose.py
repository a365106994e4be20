"""Static checks of docker-compose.yaml, the Dockerfile and docker/care-commons/.

No Docker engine is needed: the compose file is parsed with PyYAML (anchors and ``<<`` merge keys
resolved the way Compose resolves them) and variable references are interpolated by a small
re-implementation of Compose's rules, so the checks see what the containers would see.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml


def _find_repo_root() -> Path:
    """The nearest ancestor of this file holding docker-compose.yaml (normally tests/..)."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "docker-compose.yaml").is_file():
            return candidate
    raise RuntimeError(f"no docker-compose.yaml found in {here} or any parent directory")


REPO_ROOT = _find_repo_root()
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CARE_COMMONS_DIR = REPO_ROOT / "docker" / "care-commons"

AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
]
REQUIRED_SERVICES = ["postgres", "redis", *AIRFLOW_SERVICES, "airflow-init", "care-commons-db"]

CONNECTION_VARS = {
    "AIRFLOW_CONN_CARE_COMMONS_DB": "postgres",
    "AIRFLOW_CONN_BACKUP_S3": "aws",
    "AIRFLOW_CONN_SLACK_ALERTS": "slackwebhook",
    "AIRFLOW_CONN_CARE_COMMONS_ADMIN": "postgres",
}
PGDR_SETTINGS = [
    "AIRFLOW_VAR_PGDR_DATABASES",
    "AIRFLOW_VAR_PGDR_S3_BUCKET",
    "AIRFLOW_VAR_PGDR_S3_PREFIX",
    "AIRFLOW_VAR_PGDR_STAGING_DIR",
    "AIRFLOW_VAR_PGDR_KMS_KEY_ID",
    "AIRFLOW_VAR_PGDR_AWS_CONN_ID",
    "AIRFLOW_VAR_PGDR_SLACK_CONN_ID",
    "AIRFLOW_VAR_PGDR_LOCAL_RETENTION_DAYS",
]
# Variables that must make `docker compose` fail when unset (${VAR:?message}) and never get a default.
REQUIRED_VARS = [
    "AIRFLOW_DB_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_JWT_SECRET",
    "PGDR_BACKUP_PASSWORD",
    "CARE_COMMONS_DB_PASSWORD",
    "SLACK_WEBHOOK_URL",
    "PGDR_S3_BUCKET",
]
# Host directories created at run time (by docker / airflow-init), not kept in the repository.
RUNTIME_HOST_DIRS = {"logs", "config"}
# One-shot jobs that exit when done: no healthcheck.
ONE_SHOT_SUFFIX = "-init"

SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|PASSPHRASE|CREDENTIAL|_KEY$|WEBHOOK", re.I)
# ${NAME}, ${NAME:-x}, ${NAME-x}, ${NAME:?x}, ${NAME?x}, ${NAME:+x}, ${NAME+x}; no nesting.
REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
URI_USERINFO_RE = re.compile(r"[a-z][a-z0-9+.\-]*://([^/@\s:]*):([^@\s]*)@", re.I)
KNOWN_TOKEN_RES = [
    re.compile(r"hooks\.slack\.com/services/[A-Z0-9]"),
    re.compile(r"xox[abprs]-[0-9A-Za-z-]{10,}"),
    re.compile(r"\bA(?:KIA|SIA)[0-9A-Z]{16}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


# --------------------------------------------------------------------------------------- helpers
def interpolate(value: str, env: dict[str, str]) -> str:
    """Resolve Compose variable references in ``value`` against ``env``.

    Mirrors Compose: ``$$`` is a literal ``$``; ``:-``/``-`` default, ``:?``/``?`` required,
    ``:+``/``+`` alternative (the colon forms treat an empty value as unset).
    """

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        present = name in env
        set_nonempty = present and env[name] != ""
        is_set = set_nonempty if (op or "").startswith(":") else present
        if op in (":-", "-"):
            return env[name] if is_set else arg
        if op in (":?", "?"):
            if not is_set:
                raise KeyError(f"required variable {name} is not set: {arg}")
            return env[name]
        if op in (":+", "+"):
            return arg if is_set else ""
        return env.get(name, "")

    parts = value.split("$$")
    return "$".join(REF_RE.sub(resolve, part) for part in parts)


def strip_refs(value: str) -> str:
    """``value`` without its variable references (and escaped ``$$``): the literal remainder."""
    return REF_RE.sub("", value.replace("$$", ""))


def iter_strings(node, path=""):
    """Every string scalar in the parsed YAML, with a dotted path, keys included."""
    if isinstance(node, dict):
        for key, val in node.items():
            yield f"{path}.{key}(key)", str(key)
            yield from iter_strings(val, f"{path}.{key}")
    elif isinstance(node, list):
        for i, val in enumerate(node):
            yield from iter_strings(val, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def env_mapping(env) -> dict[str, str]:
    """A service's ``environment`` in either the mapping or the list form."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    result = {}
    for item in env:
        key, _, val = str(item).partition("=")
        result[key] = val
    return result


def volume_entries(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service, short or long syntax."""
    entries = []
    for vol in service.get("volumes", []) or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) == 1:  # anonymous volume
                continue
            entries.append((parts[0], parts[1]))
        else:
            if vol.get("type", "volume") in ("volume", "bind") and vol.get("source"):
                entries.append((vol["source"], vol["target"]))
    return entries


def is_bind_source(source: str) -> bool:
    return source.startswith((".", "/", "~")) or "${" in source


DUMMY_ENV = {name: f"dummy-{name.lower().replace('_', '-')}" for name in REQUIRED_VARS}
DUMMY_ENV["SLACK_WEBHOOK_URL"] = "https://slack-webhook.invalid/T0/B0/dummy"


# -------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text) -> dict:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict), "docker-compose.yaml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def common_env(compose) -> dict[str, str]:
    return env_mapping(compose["x-airflow-common"]["environment"])


# ------------------------------------------------------------------------------------- structure
def test_repo_root_is_the_project():
    assert (REPO_ROOT / "tests").is_dir()
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("name", REQUIRED_SERVICES)
def test_required_service_exists(services, name):
    assert name in services


def test_depends_on_targets_exist(services):
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        targets = deps if isinstance(deps, list) else list(deps)
        for target in targets:
            assert target in services, f"{name} depends on unknown service {target!r}"


def test_depends_on_conditions_are_valid(services):
    valid = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, dict):
            for target, spec in deps.items():
                cond = (spec or {}).get("condition", "service_started")
                assert cond in valid, f"{name} -> {target}: bad condition {cond!r}"
                if cond == "service_healthy" and target in services:
                    assert "healthcheck" in services[target], f"{name} waits for {target} health"


def test_named_volumes_are_declared(compose, services):
    declared = set((compose.get("volumes") or {}).keys())
    used = set()
    for service in [compose["x-airflow-common"], *services.values()]:
        for source, _target in volume_entries(service):
            if not is_bind_source(source):
                used.add(source)
    assert used, "no named volumes found"
    assert used <= declared, f"undeclared named volumes: {sorted(used - declared)}"


def test_bind_mount_sources_exist(compose, services):
    checked = []
    for service in [compose["x-airflow-common"], *services.values()]:
        for source, target in volume_entries(service):
            if not is_bind_source(source):
                continue
            assert source.startswith("./") or source == ".", (
                f"bind mount {source} -> {target} must be relative to the repository"
            )
            rel = Path(source)
            if rel.parts and rel.parts[0] in RUNTIME_HOST_DIRS:
                continue
            assert (REPO_ROOT / rel).exists(), f"bind-mounted path {source} missing in {REPO_ROOT}"
            checked.append(source)
    for expected in ("./dags", "./plugins", "./include"):
        assert expected in checked


def test_airflow_common_mounts(compose):
    targets = dict((t, s) for s, t in volume_entries(compose["x-airflow-common"]))
    for sub in ("dags", "plugins", "include", "logs", "config"):
        assert targets.get(f"/opt/airflow/{sub}") == f"./{sub}"
    staging = targets.get("/opt/airflow/staging")
    assert staging and not is_bind_source(staging), "staging must be a named volume"


def test_build_context_and_dockerfile_exist(compose, services):
    builds = [s["build"] for s in [compose["x-airflow-common"], *services.values()] if "build" in s]
    assert builds, "the Airflow image is not built from the repository's Dockerfile"
    for build in builds:
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (REPO_ROOT / context).is_dir()
        assert (REPO_ROOT / context / dockerfile).is_file()


def test_airflow_services_share_common_config(compose, services):
    common = compose["x-airflow-common"]
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        service = services[name]
        assert service.get("build") == common["build"], name
        env = env_mapping(service.get("environment"))
        for var in CONNECTION_VARS:
            assert var in env, f"{name} lacks {var}"


def test_every_long_running_service_has_healthcheck(services):
    for name, service in services.items():
        if name.endswith(ONE_SHOT_SUFFIX):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check.get("test"), f"{name} healthcheck has no test"


def test_apiserver(services):
    api = services["airflow-apiserver"]
    assert api["command"] == "api-server"
    assert "8080:8080" in [str(p) for p in api["ports"]]
    assert "/api/v2/version" in " ".join(api["healthcheck"]["test"])


def test_component_commands(services):
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-worker"]["command"] == "celery worker"
    assert services["airflow-triggerer"]["command"] == "triggerer"


def test_airflow_init_migrates_and_others_wait_for_it(services):
    init = services["airflow-init"]
    assert env_mapping(init["environment"]).get("_AIRFLOW_DB_MIGRATE") == "true"
    for name in AIRFLOW_SERVICES:
        cond = services[name]["depends_on"]["airflow-init"]["condition"]
        assert cond == "service_completed_successfully", name


# ----------------------------------------------------------------------------------- environment
def test_executor_is_celery(common_env):
    assert common_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common_env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@postgres/" in common_env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert "@postgres/" in common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_airflow3_settings(common_env):
    assert common_env["AIRFLOW__CORE__AUTH_MANAGER"] == (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    assert common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://airflow-apiserver:8080/execution/"
    )
    assert common_env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"


@pytest.mark.parametrize("name", PGDR_SETTINGS)
def test_pgdr_setting_defined(common_env, name):
    assert name in common_env


def test_pgdr_setting_values(common_env):
    env = {k: interpolate(v, DUMMY_ENV) for k, v in common_env.items()}
    assert json.loads(env["AIRFLOW_VAR_PGDR_DATABASES"]) == ["care_commons_db"]
    assert env["AIRFLOW_VAR_PGDR_S3_BUCKET"] == DUMMY_ENV["PGDR_S3_BUCKET"]
    assert env["AIRFLOW_VAR_PGDR_STAGING_DIR"] == "/opt/airflow/staging"
    assert env["AIRFLOW_VAR_PGDR_AWS_CONN_ID"] == "backup_s3"
    assert env["AIRFLOW_VAR_PGDR_SLACK_CONN_ID"] == "slack_alerts"
    assert int(env["AIRFLOW_VAR_PGDR_LOCAL_RETENTION_DAYS"]) == 30
    assert "${PGDR_KMS_KEY_ID" in common_env["AIRFLOW_VAR_PGDR_KMS_KEY_ID"]


def test_configured_conn_ids_have_connections(common_env):
    env = {k: interpolate(v, DUMMY_ENV) for k, v in common_env.items()}
    conn_ids = [
        *json.loads(env["AIRFLOW_VAR_PGDR_DATABASES"]),
        env["AIRFLOW_VAR_PGDR_AWS_CONN_ID"],
        env["AIRFLOW_VAR_PGDR_SLACK_CONN_ID"],
    ]
    for conn_id in conn_ids:
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in common_env, conn_id


def test_connections_are_valid_json(common_env):
    conns = {}
    for var, conn_type in CONNECTION_VARS.items():
        conn = json.loads(interpolate(common_env[var], DUMMY_ENV))
        assert conn["conn_type"] == conn_type, var
        conns[var] = conn
    db = conns["AIRFLOW_CONN_CARE_COMMONS_DB"]
    assert db["host"] == "care-commons-db"
    assert db["login"] == "pgdr_backup"
    assert db["password"] == DUMMY_ENV["PGDR_BACKUP_PASSWORD"]
    s3 = conns["AIRFLOW_CONN_BACKUP_S3"]
    assert s3["extra"]["endpoint_url"].startswith("http")
    assert conns["AIRFLOW_CONN_SLACK_ALERTS"]["password"] == DUMMY_ENV["SLACK_WEBHOOK_URL"]


def test_backup_s3_uses_default_credential_chain_when_no_keys(common_env):
    s3 = json.loads(interpolate(common_env["AIRFLOW_CONN_BACKUP_S3"], DUMMY_ENV))
    assert s3["login"] == "" and s3["password"] == ""


@pytest.mark.parametrize("missing", REQUIRED_VARS)
def test_required_variable_fails_fast(compose_text, compose, missing):
    """Compose would refuse the file if any required variable were unset."""
    env = {k: v for k, v in DUMMY_ENV.items() if k != missing}
    with pytest.raises(KeyError, match=missing):
        for _path, value in iter_strings(compose):
            interpolate(value, env)


# --------------------------------------------------------------------------------------- secrets
def test_required_variables_fail_fast_and_have_no_default(compose):
    refs = [
        ref
        for _path, value in iter_strings(compose)
        for ref in REF_RE.findall(value.replace("$$", ""))
    ]
    for name in REQUIRED_VARS:
        ops = {op for ref_name, op, _arg in refs if ref_name == name}
        assert ":?" in ops, f"{name} must be referenced as ${{{name}:?message}}"
        assert ops <= {":?", "?", ""}, f"{name} must never get a default value, got {ops}"


def test_dollar_signs_are_well_formed(compose):
    """A bare $NAME would be silently interpolated by Compose; shell variables need $$."""
    for path, value in iter_strings(compose):
        leftover = strip_refs(value)
        assert "$" not in leftover, f"{path}: unescaped or malformed '$' in {value!r}"


def test_no_literal_secret_values(compose):
    marker = "\x00"
    for path, value in iter_strings(compose):
        if path.endswith("(key)"):
            continue
        key = path.rsplit(".", 1)[-1]
        if SECRET_KEY_RE.search(key) and not key.endswith(("_FILE", "_PATH")):
            assert strip_refs(value).strip() == "", f"{path} holds a literal value {value!r}"
        # user:password@ in URIs (SQLAlchemy, Celery, MC_HOST_*): the password must be a reference
        marked = REF_RE.sub(marker, value.replace("$$", "$"))
        for match in URI_USERINFO_RE.finditer(marked):
            password = match.group(2)
            assert password.replace(marker, "") == "", f"{path}: literal password in URI {value!r}"


def test_no_literal_password_in_connections(common_env):
    for var in CONNECTION_VARS:
        raw = common_env[var]
        for field in ("password", "aws_secret_access_key", "aws_session_token", "token"):
            for literal in re.findall(rf'"{field}"\s*:\s*"((?:[^"\\]|\\.)*)"', raw):
                assert strip_refs(literal) == "", f"{var}: {field} is a literal"


@pytest.mark.parametrize(
    "path",
    [COMPOSE_FILE, DOCKERFILE, *sorted(p for p in CARE_COMMONS_DIR.rglob("*") if p.is_file())],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_no_known_token_formats(path):
    text = path.read_text(encoding="utf-8")
    for pattern in KNOWN_TOKEN_RES:
        assert not pattern.search(text), f"{path.name} contains something like a real credential"


# ------------------------------------------------------------------------------ protected database
def test_care_commons_db(compose, services):
    db = services["care-commons-db"]
    assert db["image"] == "postgres:15"
    command = db["command"] if isinstance(db["command"], str) else " ".join(db["command"])
    for flag in ("wal_level=replica", "max_wal_senders=10", "max_replication_slots=10"):
        assert flag in command
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    mounts = dict((t, s) for s, t in volume_entries(db))
    data = mounts.get("/var/lib/postgresql/data")
    assert data and not is_bind_source(data), "care-commons data must be a named volume"
    assert data in (compose.get("volumes") or {})
    initdb = mounts.get("/docker-entrypoint-initdb.d")
    assert initdb and (REPO_ROOT / initdb).is_dir()
    assert (REPO_ROOT / initdb).resolve().is_relative_to(CARE_COMMONS_DIR.resolve())
    env = env_mapping(db["environment"])
    assert REF_RE.fullmatch(env["PGDR_BACKUP_PASSWORD"])


def test_care_commons_init_creates_backup_role():
    scripts = sorted(p for p in CARE_COMMONS_DIR.rglob("*") if p.suffix in (".sh", ".sql"))
    assert scripts, "no init script under docker/care-commons"
    text = "\n".join(p.read_text(encoding="utf-8") for p in scripts)
    assert "pgdr_backup" in text
    assert "BYPASSRLS" in text
    assert re.search(r"GRANT\s+pg_read_all_data\s+TO\s+pgdr_backup", text)
    assert "PGDR_BACKUP_PASSWORD" in text, "password must come from the environment"
    # no quoted literal after PASSWORD: only a psql variable (:'name') is allowed
    assert not re.search(r"PASSWORD\s+'", text, re.I), "literal password in init SQL"
    assert not re.search(r"PASSWORD\s+E?'", text), "literal password in init SQL"


# ---------------------------------------------------------------------------------------- image
def test_dockerfile_airflow_version():
    text = DOCKERFILE.read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["apache/airflow:3.3.2-python3.11"]


def test_dockerfile_tools_and_pins():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "postgresql-client-15" in text
    assert re.search(r"\bpostgresql-15\b", text)
    assert "zstandard==0.25.0" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] == "airflow", "the image must end as the airflow user"



def test_the_wal_receiver_streams_synchronously_into_the_volume_pg_wal_archive_ships(compose, services, common_env):
    receiver = services["pgdr-wal-receiver"]
    argv = receiver["entrypoint"] + receiver["command"]
    assert argv[:3] == ["python", "-m", "pgdr.wal_receiver"] and "--synchronous" in argv
    assert argv[argv.index("--slot") + 1] == "pgdr_receiver"
    directory = argv[argv.index("--directory") + 1]
    env = {k: interpolate(v, DUMMY_ENV) for k, v in common_env.items()}
    wal_root = env["AIRFLOW_VAR_PGDR_WAL_RECEIVER_DIR"]
    assert directory == f"{wal_root}/care_commons_db", "pg_wal_archive reads <wal_receiver_dir>/<database>"
    mounts = lambda service: {m.split(":")[0]: m.split(":")[1] for m in service["volumes"]}  # noqa: E731
    assert mounts(receiver)["pgdr-wal"] == wal_root
    assert mounts(compose["x-airflow-common"])["pgdr-wal"] == wal_root, "the workers see the receiver's WAL"
    assert "pgdr-wal" in compose["volumes"] and "pgdr-pitr" in compose["volumes"]
    assert "password" not in " ".join(argv).lower(), "the password travels in the environment only"
    assert "--conninfo-env" in argv and "PGDR_RECEIVER_CONNINFO" in receiver["environment"]
    assert receiver["depends_on"]["care-commons-db"]["condition"] == "service_healthy"
    assert "receiver.status.json" in " ".join(receiver["healthcheck"]["test"])
    db_args = " ".join(services["care-commons-db"]["command"])
    assert "synchronous_standby_names=${PGDR_SYNCHRONOUS_STANDBY_NAMES:-pgdr_receiver}" in db_args
    assert json.loads(env["AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS"]) == {"care_commons_db": "care_commons_admin"}
