"""Checks of the production-like stack: docker-compose.yaml (+ docker-compose.aws.yaml), the
Dockerfile, .env.example and docker/care-commons/.

No Docker engine here: the compose files are parsed with PyYAML (anchors and ``<<`` merge keys
resolved the way Compose resolves them) and variable references are interpolated by a small
re-implementation of Compose's rules, so the checks see what the containers would see. The pgdr
settings the stack sets are validated by pgdr's own ``parse_settings``. What can run without
Docker runs for real: the care-commons init script against a PostgreSQL 15 cluster configured with
the compose file's server settings, the WAL receiver with the compose file's arguments, connection
string and healthcheck, the Dockerfile's package list and its build-time check of each major's tools
(against the machine's PostgreSQL 15 and 18), and the summarize_wal init script on 15 and 18.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psycopg2
import pytest
import yaml

from pgdr.settings import DEADLINE_SETTINGS, PREFIX, SETTINGS, parse_settings
from tests.support.waiting import wait_for


def _find_repo_root() -> Path:
    """The nearest ancestor of this file holding docker-compose.yaml (normally tests/..)."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "docker-compose.yaml").is_file():
            return candidate
    raise RuntimeError(f"no docker-compose.yaml found in {here} or any parent directory")


REPO_ROOT = _find_repo_root()
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
AWS_OVERLAY_FILE = REPO_ROOT / "docker-compose.aws.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
IMAGE_REQUIREMENTS = REPO_ROOT / "docker" / "requirements.txt"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
CARE_COMMONS_DIR = REPO_ROOT / "docker" / "care-commons"
INIT_SCRIPT = CARE_COMMONS_DIR / "initdb" / "10-pgdr-roles.sh"
SUMMARIZE_WAL_SCRIPT = CARE_COMMONS_DIR / "initdb" / "20-pgdr-summarize-wal.sh"
# pgdr_pg_bindir's default: the Debian/PGDG layout, {major} replaced by each server's major
PG_BINDIR = "/usr/lib/postgresql/{major}/bin"
SUPPORTED_MAJORS = ["15", "16", "17", "18"]
PG_TOOLS = ["pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "pg_receivewal", "pg_verifybackup",
            "initdb", "pg_ctl", "postgres"]
# PITR, drills and restores of incremental chains (17+) run these from the backup's own major
PITR_TOOLS = ["initdb", "pg_ctl", "postgres"]

AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
]
# every service built from x-airflow-common, so every one that could run a task or parse a DAG
AIRFLOW_IMAGE_SERVICES = [*AIRFLOW_SERVICES, "airflow-init", "airflow-cli", "flower"]
REQUIRED_SERVICES = ["postgres", "redis", *AIRFLOW_IMAGE_SERVICES, "care-commons-db", "pgdr-wal-receiver",
                     "minio", "minio-init"]
# The official Airflow 3 docker-compose.yaml gives these a healthcheck (airflow-init and airflow-cli
# have none); pgdr's own long-running services need one as much.
OFFICIAL_HEALTHCHECKED = ["postgres", "redis", *AIRFLOW_SERVICES, "flower"]
PGDR_LONG_RUNNING = ["care-commons-db", "pgdr-wal-receiver", "minio"]
ONE_SHOT = ["airflow-init", "airflow-cli", "minio-init"]
PROFILES = {"airflow-cli": ["debug"], "flower": ["flower"], "minio": ["local-s3"], "minio-init": ["local-s3"]}

CONNECTION_VARS = {
    "AIRFLOW_CONN_CARE_COMMONS_DB": "postgres",
    "AIRFLOW_CONN_CARE_COMMONS_ADMIN": "postgres",
    "AIRFLOW_CONN_BACKUP_S3": "aws",
    "AIRFLOW_CONN_SLACK_ALERTS": "slackwebhook",
    "AIRFLOW_CONN_PGDR_CONFIG_KEY": "generic",
}
# Variables that must make `docker compose` fail when unset (${VAR:?message}) and never get a default.
REQUIRED_VARS = [
    "AIRFLOW_DB_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_JWT_SECRET",
    "CARE_COMMONS_DB_PASSWORD",
    "PGDR_BACKUP_PASSWORD",
    "PGDR_REPLICATION_PASSWORD",
    "PGDR_ADMIN_PASSWORD",
    "PGDR_MARKERS_PASSWORD",
    "PGDR_RETENTION_PASSWORD",
    "PGDR_CONFIG_KEY",
    "SLACK_WEBHOOK_URL",
    "PGDR_S3_BUCKET",
]
# Host directories created at run time (by docker / airflow-init), not kept in the repository.
RUNTIME_HOST_DIRS = {"logs", "config"}

SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|PASSPHRASE|CREDENTIAL|_KEY$|WEBHOOK", re.IGNORECASE)
# ${NAME}, ${NAME:-x}, ${NAME-x}, ${NAME:?x}, ${NAME?x}, ${NAME:+x}, ${NAME+x}; no nesting.
REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
URI_USERINFO_RE = re.compile(r"[a-z][a-z0-9+.\-]*://([^/@\s:]*):([^@\s]*)@", re.IGNORECASE)
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


def service_env(compose: dict, name: str) -> dict[str, str]:
    return env_mapping(compose["services"][name].get("environment"))


def overlay(base: dict, extra: dict) -> dict:
    """``extra`` layered over ``base`` as `docker compose -f base -f extra` does for what these files
    use: a service's environment mapping merged key by key, other keys replaced."""
    merged = json.loads(json.dumps(base))
    for name, spec in (extra.get("services") or {}).items():
        target = merged["services"][name]
        for key, value in spec.items():
            if key == "environment":
                target[key] = {**env_mapping(target.get(key)), **env_mapping(value)}
            else:
                target[key] = value
    return merged


def pgdr_variables(env: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    """The pgdr settings an environment sets, by short name, interpolated against ``values``."""
    var_prefix = f"AIRFLOW_VAR_{PREFIX.upper()}"
    return {name[len(var_prefix):].lower(): interpolate(value, values)
            for name, value in env.items() if name.startswith(var_prefix)}


def container_conn(env: dict[str, str], var: str, values: dict[str, str]) -> dict:
    return json.loads(interpolate(env[var], values))


def env_example() -> dict[str, str]:
    """NAME -> value of every variable .env.example names, set (NAME=v) or commented (# NAME=v)."""
    names = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*([A-Z_][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            names[match.group(1)] = match.group(2).strip()
    return names


DUMMY_ENV = {name: f"dummy-{name.lower().replace('_', '-')}" for name in REQUIRED_VARS}
DUMMY_ENV["SLACK_WEBHOOK_URL"] = "https://slack-webhook.invalid/T0/B0/dummy"
DUMMY_ENV["PGDR_CONFIG_KEY"] = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="


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
def aws_overlay() -> dict:
    return yaml.safe_load(AWS_OVERLAY_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def common_env(compose) -> dict[str, str]:
    return env_mapping(compose["x-airflow-common"]["environment"])


@pytest.fixture(scope="module")
def worker_env(compose) -> dict[str, str]:
    return service_env(compose, "airflow-worker")


# ------------------------------------------------------------------------------------- structure
def test_repo_root_is_the_project():
    assert (REPO_ROOT / "tests").is_dir()
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("name", REQUIRED_SERVICES)
def test_required_service_exists(services, name):
    assert name in services


def test_optional_services_sit_behind_the_official_profiles(services):
    for name, service in services.items():
        assert service.get("profiles") == PROFILES.get(name), f"{name}: profiles {service.get('profiles')}"


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
                if cond == "service_completed_successfully":
                    assert target in ONE_SHOT, f"{name} waits for {target} to exit, but it keeps running"
                # a service outside every profile must not wait for one that only a profile starts
                if not service.get("profiles"):
                    assert not services[target].get("profiles"), f"{name} needs {target}, which a profile starts"


def test_named_volumes_are_declared(compose, services):
    declared = set((compose.get("volumes") or {}).keys())
    used = set()
    for service in [compose["x-airflow-common"], *services.values()]:
        for source, _target in volume_entries(service):
            if not is_bind_source(source):
                used.add(source)
    assert used, "no named volumes found"
    assert used <= declared, f"undeclared named volumes: {sorted(used - declared)}"
    assert declared <= used, f"declared but never mounted: {sorted(declared - used)}"


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
    targets = {t: s for s, t in volume_entries(compose["x-airflow-common"])}
    for sub in ("dags", "plugins", "include", "logs", "config"):
        assert targets.get(f"/opt/airflow/{sub}") == f"./{sub}"
    staging = targets.get("/opt/airflow/staging")
    assert staging and not is_bind_source(staging), "staging must be a named volume"


def test_worker_has_every_common_mount_plus_care_commons_read_only(compose, services):
    common = compose["x-airflow-common"]["volumes"]
    worker = services["airflow-worker"]["volumes"]
    assert worker[: len(common)] == common, "the worker's own volumes list must repeat the common mounts"
    extra = {target: (source, mode) for source, target, *mode in (v.split(":") for v in worker[len(common):])}
    assert set(extra) == {"/srv/care-commons/uploads", "/srv/care-commons/config", "/opt/airflow/restore"}
    for target, (source, mode) in extra.items():
        assert source in compose["volumes"]
        if target.startswith("/srv/care-commons/"):
            assert mode == ["ro"], f"{target} must be mounted read-only: pgdr only reads care-commons' files"
    assert extra["/opt/airflow/restore"] == ("pgdr-restore", []), "file and config restores need somewhere to write"
    for name in AIRFLOW_IMAGE_SERVICES:
        if name != "airflow-worker":
            assert "volumes" not in services[name] or services[name]["volumes"] == common, name


def test_airflow_services_use_the_built_image(compose, services):
    common = compose["x-airflow-common"]
    build = common["build"]
    assert (REPO_ROOT / build["context"]).is_dir()
    assert (REPO_ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name in [*AIRFLOW_IMAGE_SERVICES, "pgdr-wal-receiver"]:
        assert services[name]["build"] == build, name
        assert services[name]["image"] == common["image"], name


def test_airflow_services_share_common_config(compose, services):
    for name in AIRFLOW_IMAGE_SERVICES:
        env = service_env(compose, name)
        for var in CONNECTION_VARS:
            assert var in env, f"{name} lacks {var}"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name


def test_healthchecks_where_the_official_file_has_them(services):
    for name in [*OFFICIAL_HEALTHCHECKED, *PGDR_LONG_RUNNING]:
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: bad healthcheck test"
    for name in ONE_SHOT:
        assert "healthcheck" not in services[name], f"{name} exits when done; a healthcheck would never pass"
        assert services[name].get("restart") in (None, "no"), f"{name} must not be restarted"
    unclassified = set(services) - set(OFFICIAL_HEALTHCHECKED) - set(PGDR_LONG_RUNNING) - set(ONE_SHOT)
    assert not unclassified, f"new services need a place in this test: {sorted(unclassified)}"


def test_apiserver(services):
    api = services["airflow-apiserver"]
    assert api["command"] == "api-server"
    assert "8080:8080" in [str(p) for p in api["ports"]]
    assert "/api/v2/version" in " ".join(api["healthcheck"]["test"])


def test_component_commands(services):
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-worker"]["command"] == "celery worker"
    assert env_mapping(services["airflow-worker"]["environment"])["DUMB_INIT_SETSID"] == "0"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert services["flower"]["command"] == "celery flower"
    assert services["airflow-cli"]["command"] == ["bash", "-c", "airflow"]


def test_airflow_init_migrates_and_others_wait_for_it(services):
    init = services["airflow-init"]
    assert env_mapping(init["environment"]).get("_AIRFLOW_DB_MIGRATE") == "true"
    assert init["user"] == "0:0"
    script = init["command"][1]
    for path in ("/opt/airflow/staging", "/opt/airflow/pitr", "/var/lib/pgdr/wal"):
        assert path in script, f"airflow-init does not prepare {path}"
    for name in [*AIRFLOW_SERVICES, "flower"]:
        cond = services[name]["depends_on"]["airflow-init"]["condition"]
        assert cond == "service_completed_successfully", name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert "care-commons-db" not in services["airflow-worker"]["depends_on"], \
        "workers must come up to restore while the protected database is down"


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
    for var, ref in (("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET"),
                     ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_FERNET_KEY"),
                     ("AIRFLOW__API__SECRET_KEY", "AIRFLOW_API_SECRET_KEY")):
        assert REF_RE.fullmatch(common_env[var]).group(1) == ref, var


def _every_airflow_env(compose, aws_overlay):
    """(label, environment) of every Airflow service, as shipped and with the AWS overlay."""
    with_aws = overlay(compose, aws_overlay)
    for name in AIRFLOW_IMAGE_SERVICES:
        yield name, service_env(compose, name)
        yield f"{name} (aws)", service_env(with_aws, name)


def test_every_pgdr_variable_is_a_real_setting_and_parses(compose, aws_overlay):
    known = {s.name for s in SETTINGS} | set(DEADLINE_SETTINGS)
    values = {**DUMMY_ENV, "PGDR_KMS_KEY_ID": "alias/pgdr-backups", "PGDR_S3_REGION": "eu-west-1"}
    for label, env in _every_airflow_env(compose, aws_overlay):
        raw = pgdr_variables(env, values)
        unknown = sorted(set(raw) - known)
        assert not unknown, f"{label}: AIRFLOW_VAR_PGDR_* that no setting reads: {unknown}"
        settings = parse_settings({k: v for k, v in raw.items() if k not in DEADLINE_SETTINGS})
        assert settings.databases == ("care_commons_db",), label
        assert settings.s3_bucket == DUMMY_ENV["PGDR_S3_BUCKET"], label


def test_settings_the_stack_depends_on(worker_env):
    settings = parse_settings(pgdr_variables(worker_env, DUMMY_ENV))
    assert str(settings.staging_dir) == "/opt/airflow/staging"
    assert str(settings.pg_bindir) == PG_BINDIR and settings.pg_bindirs == {}
    # each major the image installs is found where the Dockerfile puts it
    for major in dockerfile_majors():
        assert str(settings.tool_dirs.directory(int(major))) == f"/usr/lib/postgresql/{major}/bin"
    assert settings.physical_backups is True
    assert settings.kms_key_id == "" and settings.sse_args == {"ServerSideEncryption": "AES256"}
    assert settings.object_lock_mode == "GOVERNANCE"
    assert settings.restore_conn_ids == {"care_commons_db": "care_commons_admin"}
    assert [str(p) for p in settings.file_dirs["care_commons_db"]] == ["/srv/care-commons/uploads"]
    assert [p.name for p in settings.config_files["care_commons_db"]] == [".env", "production.json"]
    assert settings.secret_files == ("production.json",)


def test_every_connection_a_setting_names_is_wired(compose, aws_overlay):
    for label, env in _every_airflow_env(compose, aws_overlay):
        values = {**DUMMY_ENV, "PGDR_KMS_KEY_ID": "alias/k", "PGDR_S3_REGION": "eu-west-1"}
        settings = parse_settings(pgdr_variables(env, values))
        named = {*settings.databases, settings.aws_conn_id, settings.slack_conn_id, settings.config_key_conn_id,
                 *settings.restore_conn_ids.values(), *settings.drill_conn_ids.values(),
                 *settings.marker_conn_ids.values(), *settings.retention_conn_ids.values()}
        wired = {var[len("AIRFLOW_CONN_"):].lower() for var in env if var.startswith("AIRFLOW_CONN_")}
        assert named == wired, f"{label}: settings name {sorted(named)}, environment wires {sorted(wired)}"


def test_connections_are_valid_json(common_env):
    conns = {}
    for var, conn_type in CONNECTION_VARS.items():
        conn = container_conn(common_env, var, DUMMY_ENV)
        assert conn["conn_type"] == conn_type, var
        conns[var] = conn
    db = conns["AIRFLOW_CONN_CARE_COMMONS_DB"]
    assert (db["host"], db["port"], db["schema"]) == ("care-commons-db", 5432, "care_commons")
    assert db["login"] == "pgdr_backup"
    assert db["password"] == DUMMY_ENV["PGDR_BACKUP_PASSWORD"]
    admin = conns["AIRFLOW_CONN_CARE_COMMONS_ADMIN"]
    assert admin["login"] == "pgdr_admin" and admin["password"] == DUMMY_ENV["PGDR_ADMIN_PASSWORD"]
    assert "CARE_COMMONS_DB_PASSWORD" not in json.dumps(common_env), "Airflow never gets the bootstrap superuser"
    s3 = conns["AIRFLOW_CONN_BACKUP_S3"]
    assert s3["extra"]["endpoint_url"] == "http://minio:9000"
    assert s3["login"] == "" and s3["password"] == "", "no keys set: the default AWS credential chain"
    assert conns["AIRFLOW_CONN_SLACK_ALERTS"]["password"] == DUMMY_ENV["SLACK_WEBHOOK_URL"]
    assert conns["AIRFLOW_CONN_PGDR_CONFIG_KEY"]["password"] == DUMMY_ENV["PGDR_CONFIG_KEY"]


def test_file_and_config_backups_read_the_worker_read_only_mounts(services, worker_env):
    settings = parse_settings(pgdr_variables(worker_env, DUMMY_ENV))
    mounts = {target: (source, mode) for source, target, *mode in
              (v.split(":") for v in services["airflow-worker"]["volumes"])}

    def mount_of(path: Path):
        for target, (source, mode) in mounts.items():
            if path == Path(target) or Path(target) in path.parents:
                return source, mode
        raise AssertionError(f"{path} is on no volume of airflow-worker")

    for path in [*settings.file_dirs["care_commons_db"], *settings.config_files["care_commons_db"]]:
        source, mode = mount_of(path)
        assert mode == ["ro"] and source.startswith("care-commons-"), path


def test_work_directories_are_shared_named_volumes(services, worker_env):
    settings = parse_settings(pgdr_variables(worker_env, DUMMY_ENV))
    worker = {target: source for source, target, *_ in (v.split(":") for v in services["airflow-worker"]["volumes"])}
    receiver = {target: source for source, target, *_ in
                (v.split(":") for v in services["pgdr-wal-receiver"]["volumes"])}
    assert worker[str(settings.staging_dir)] == "pgdr-staging"
    assert worker[str(settings.pitr_data_dir)] == "pgdr-pitr"
    assert worker[str(settings.wal_receiver_dir)] == receiver[str(settings.wal_receiver_dir)] == "pgdr-wal", \
        "pg_wal_archive on the worker ships what the receiver writes"


@pytest.mark.parametrize("missing", REQUIRED_VARS)
def test_required_variable_fails_fast(compose, missing):
    """Compose would refuse the file if any required variable were unset."""
    env = {k: v for k, v in DUMMY_ENV.items() if k != missing}
    with pytest.raises(KeyError, match=missing):
        for _path, value in iter_strings(compose):
            interpolate(value, env)


def test_every_variable_is_defaulted_or_in_env_example(compose, aws_overlay):
    documented = env_example()
    for label, data in (("docker-compose.yaml", compose), ("docker-compose.aws.yaml", aws_overlay)):
        for path, value in iter_strings(data):
            for name, op, _arg in REF_RE.findall(value.replace("$$", "")):
                if op in (":-", "-") and name not in REQUIRED_VARS:
                    continue
                assert name in documented, f"{label} {path}: ${{{name}}} has no default and is not in .env.example"
    for name in REQUIRED_VARS:
        assert name in documented, f"{name} is required but .env.example does not list it"


def test_env_example_lists_every_variable_and_no_secret(compose, aws_overlay):
    used = {name for data in (compose, aws_overlay) for _p, value in iter_strings(data)
            for name, _op, _arg in REF_RE.findall(value.replace("$$", ""))}
    documented = env_example()
    assert used <= set(documented), f".env.example misses {sorted(used - set(documented))}"
    assert set(documented) <= used, \
        f".env.example lists variables no compose file reads: {sorted(set(documented) - used)}"
    for name, value in documented.items():
        if SECRET_KEY_RE.search(name):
            assert value == "", f".env.example gives {name} a value; secrets are generated per deployment"
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for pattern in KNOWN_TOKEN_RES:
        assert not pattern.search(text)


def test_env_is_kept_out_of_the_build_context():
    ignored = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored and ".env.*" in ignored and "!.env.example" in ignored


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


@pytest.mark.parametrize("path", [COMPOSE_FILE, AWS_OVERLAY_FILE], ids=lambda p: p.name)
def test_dollar_signs_are_well_formed(path):
    """A bare $NAME would be silently interpolated by Compose; shell variables need $$."""
    for where, value in iter_strings(yaml.safe_load(path.read_text(encoding="utf-8"))):
        leftover = strip_refs(value)
        assert "$" not in leftover, f"{where}: unescaped or malformed '$' in {value!r}"


def test_no_literal_secret_values(compose):
    marker = "\x00"
    for path, value in iter_strings(compose):
        if path.endswith("(key)"):
            continue
        key = path.rsplit(".", 1)[-1]
        # connections are JSON: test_no_literal_password_in_connections checks their secret fields
        if (SECRET_KEY_RE.search(key) and not key.endswith(("_FILE", "_FILES", "_PATH"))
                and not key.startswith("AIRFLOW_CONN_")):
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
    [COMPOSE_FILE, AWS_OVERLAY_FILE, DOCKERFILE, ENV_EXAMPLE,
     *sorted(p for p in CARE_COMMONS_DIR.rglob("*") if p.is_file())],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_no_known_token_formats(path):
    text = path.read_text(encoding="utf-8")
    for pattern in KNOWN_TOKEN_RES:
        assert not pattern.search(text), f"{path.name} contains something like a real credential"


# ------------------------------------------------------------------------------ protected database
def server_settings(services, values: dict[str, str] | None = None) -> dict[str, str]:
    """The -c name=value settings care-commons-db's command gives the server."""
    command = services["care-commons-db"]["command"]
    assert command[0] == "postgres"
    pairs = {}
    for flag, setting in zip(command[1::2], command[2::2], strict=False):
        assert flag == "-c", command
        name, _, value = interpolate(setting, values or {}).partition("=")
        pairs[name] = value
    return pairs


def test_care_commons_db_streams_wal_to_the_receiver_synchronously(compose, services, worker_env):
    db = services["care-commons-db"]
    assert interpolate(db["image"], {}) == "postgres:18"
    settings = server_settings(services)
    assert settings["wal_level"] == "replica"
    assert int(settings["max_wal_senders"]) >= 2, "the receiver and a base backup stream at the same time"
    assert int(settings["max_replication_slots"]) >= 1
    slot = parse_settings(pgdr_variables(worker_env, DUMMY_ENV)).replication_slot
    assert settings["synchronous_standby_names"] == slot == "pgdr_receiver"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    mounts = {t: s for s, t in volume_entries(db)}
    data = mounts.get("/var/lib/postgresql/data")
    assert data and not is_bind_source(data), "care-commons data must be a named volume"
    # the postgres image of 18+ puts its data elsewhere by default and refuses a volume at .../data
    assert env_mapping(db["environment"])["PGDATA"] == "/var/lib/postgresql/data"
    assert data in (compose.get("volumes") or {})
    initdb = mounts.get("/docker-entrypoint-initdb.d")
    assert initdb and (REPO_ROOT / initdb).is_dir()
    assert (REPO_ROOT / initdb).resolve() == INIT_SCRIPT.parent.resolve()
    env = env_mapping(db["environment"])
    for name in ("PGDR_BACKUP_PASSWORD", "PGDR_REPLICATION_PASSWORD", "PGDR_ADMIN_PASSWORD"):
        assert REF_RE.fullmatch(env[name]).group(1) == name
    assert env["PGOPTIONS"] == "-c synchronous_commit=local"
    assert "--data-checksums" in env["POSTGRES_INITDB_ARGS"]


def test_care_commons_init_script_text():
    scripts = sorted(p for p in INIT_SCRIPT.parent.iterdir() if p.is_file())
    assert scripts == [INIT_SCRIPT, SUMMARIZE_WAL_SCRIPT], \
        "the image runs every file there; only the roles and summarize_wal scripts belong"
    assert all(os.access(script, os.X_OK) for script in scripts)
    text = INIT_SCRIPT.read_text(encoding="utf-8")
    for role in ("pgdr_backup", "pgdr_replication", "pgdr_admin"):
        assert f"PASSWORD :'{role}_password'" in text, f"{role}'s password must come from \\getenv"
    assert not re.search(r"PASSWORD\s+E?'", text, re.IGNORECASE), "literal password in init SQL"


def test_the_wal_receiver_streams_synchronously_into_the_volume_pg_wal_archive_ships(services, worker_env):
    receiver = services["pgdr-wal-receiver"]
    argv = receiver["entrypoint"] + receiver["command"]
    assert argv[:3] == ["python", "-m", "pgdr.wal_receiver"] and "--synchronous" in argv
    settings = parse_settings(pgdr_variables(worker_env, DUMMY_ENV))
    assert argv[argv.index("--slot") + 1] == settings.replication_slot
    directory = argv[argv.index("--directory") + 1]
    assert directory == f"{settings.wal_receiver_dir}/care_commons_db", \
        "pg_wal_archive reads <wal_receiver_dir>/<database>"
    assert "password" not in " ".join(argv).lower(), "the password travels in the environment only"
    env = env_mapping(receiver["environment"])
    assert argv[argv.index("--conninfo-env") + 1] == "PGDR_RECEIVER_CONNINFO"
    conninfo = dict(item.split("=", 1) for item in interpolate(env["PGDR_RECEIVER_CONNINFO"], DUMMY_ENV).split())
    assert conninfo == {"host": "care-commons-db", "port": "5432", "user": "pgdr_replication",
                        "password": DUMMY_ENV["PGDR_REPLICATION_PASSWORD"]}
    assert env["PGDR_PG_BINDIR"] == str(settings.pg_bindir)
    assert not any(var.startswith(("AIRFLOW_CONN_", "AIRFLOW__")) for var in env), \
        "the receiver gets its own connection only, not Airflow's secrets"
    assert receiver["depends_on"] == {"care-commons-db": {"condition": "service_healthy"}}, \
        "the receiver must not wait for Airflow: commits wait for it"
    assert f"{directory}/receiver.status.json" in " ".join(receiver["healthcheck"]["test"])


def test_minio_init_creates_a_locked_versioned_bucket(services):
    init = services["minio-init"]
    script = init["command"][0]
    assert re.search(r'mc mb --ignore-existing --with-lock "pgdr/\$\$\{PGDR_S3_BUCKET\}"', script)
    assert 'mc version enable "pgdr/$${PGDR_S3_BUCKET}"' in script
    assert script.lstrip().startswith("set -e")
    env = env_mapping(init["environment"])
    assert interpolate(env["MC_HOST_pgdr"], {"PGDR_S3_ACCESS_KEY_ID": "k", "PGDR_S3_SECRET_ACCESS_KEY": "s"}) \
        == "http://k:s@minio:9000"
    assert "PGDR_S3_SECRET_ACCESS_KEY" not in json.dumps(init["command"]), "the secret stays out of argv"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"


# ---------------------------------------------------------------------------------------- image
def test_dockerfile_airflow_version():
    text = DOCKERFILE.read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms == ["apache/airflow:3.3.2-python3.11"]


def dockerfile_runs() -> list[str]:
    """The shell of each RUN instruction of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [line[len("RUN "):] for line in text.splitlines() if line.startswith("RUN ")]


def dockerfile_majors() -> list[str]:
    """The default of the build argument PG_MAJORS."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    return re.search(r'^ARG PG_MAJORS="([^"]*)"$', text, re.MULTILINE).group(1).split()


def _bash(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_image_installs_every_supported_major_from_pgdg_and_compose_passes_the_build_argument(compose):
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert dockerfile_majors() == SUPPORTED_MAJORS
    # an ARG declared before FROM is out of scope in the RUN lines: it must follow the last FROM
    assert text.index("ARG PG_MAJORS=") > [m.start() for m in re.finditer(r"^FROM ", text, re.MULTILINE)][-1]
    build = compose["x-airflow-common"]["build"]
    assert set(build["args"]) == {"PG_MAJORS"}
    assert interpolate(build["args"]["PG_MAJORS"], {}).split() == SUPPORTED_MAJORS
    assert interpolate(build["args"]["PG_MAJORS"], {"PGDR_PG_MAJORS": "16 18"}) == "16 18"
    # the protected server's major is one the image carries the tools of, by default and when chosen
    db_image = compose["services"]["care-commons-db"]["image"]
    assert interpolate(db_image, {}) == f"postgres:{SUPPORTED_MAJORS[-1]}"
    for major in SUPPORTED_MAJORS:
        assert interpolate(db_image, {"PGDR_PG_MAJOR": major}) == f"postgres:{major}"


@pytest.mark.parametrize("majors", [" ".join(SUPPORTED_MAJORS), "16 18", "17"])
def test_the_apt_lines_install_the_client_and_server_packages_of_each_major(majors):
    """The package list the Dockerfile builds from PG_MAJORS, run by bash as the build runs it."""
    (install,) = [run for run in dockerfile_runs() if "apt.postgresql.org" in run]
    assert install.startswith("set -eux;"), "a failed download or install must fail the build"
    statement = re.search(r'(packages="\$\(for major in \$\{PG_MAJORS\}; do .*?; done\)");', install).group(1)
    listed = _bash(f'{statement}; printf "%s" "$packages"', PG_MAJORS=majors)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == sorted(
        [f"postgresql-client-{m}" for m in majors.split()] + [f"postgresql-{m}" for m in majors.split()])
    assert install.index(statement) < install.index("apt-get install -y --no-install-recommends ${packages};")
    assert install.index("pgdg main") < install.index("${packages};"), "the PGDG repository is added first"
    # the image never makes a cluster of its own: pgdr makes the PITR and drill clusters
    assert install.index("create_main_cluster") < install.index("${packages};")


def test_the_build_checks_each_majors_tools_where_pgdr_looks(tmp_path):
    """The Dockerfile's check, run for real against this machine's PostgreSQL 15 (Debian) and 18 (the PyPI
    package), laid out as /usr/lib/postgresql/<major>/bin: it passes on them and fails the build on a
    major whose directory is missing a tool or holds another major's tools."""
    from harness.pg_cluster import pg_bindir

    (check,) = [run for run in dockerfile_runs() if "for tool in ${tools}" in run]
    default_bindir = next(s.default for s in SETTINGS if s.name == "pg_bindir")
    assert default_bindir == PG_BINDIR
    assert PG_BINDIR.replace("{major}", "${major}") in check, "the build checks where pgdr_pg_bindir looks"
    tools = re.search(r'tools="([^"]+)"', check).group(1).split()
    assert set(PG_TOOLS) | set(PITR_TOOLS) <= set(tools), "the build must fail when a tool pgdr runs is missing"
    assert '"${major}" -ge 17 ]; then tools="${tools} pg_combinebackup"' in check

    root = tmp_path / "postgresql"
    for major, bindir in (("15", pg_bindir(15)), ("18", pg_bindir(18)), ("17", pg_bindir(15))):
        (root / major).mkdir(parents=True)
        (root / major / "bin").symlink_to(bindir)
    (root / "16" / "bin").mkdir(parents=True)
    local = check.replace("/usr/lib/postgresql/", f"{root}/")
    passed = _bash(local, PG_MAJORS="15 18")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    missing = _bash(local, PG_MAJORS="15 16")
    assert missing.returncode != 0 and f"missing {root}/16/bin/pg_dump" in missing.stderr
    wrong = _bash(local, PG_MAJORS="17")
    assert wrong.returncode != 0 and "pg_dump is not version 17" in wrong.stderr
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert users and users[-1] == "airflow", "the image must end as the airflow user"


def test_the_image_receiver_and_worker_look_for_tools_by_the_same_pattern(services, worker_env):
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert f'ENV PGDR_PG_BINDIR="{PG_BINDIR}"' in text
    assert "ENV PATH=" not in text, "pgdr runs tools by full path; one major first on PATH would hide the others"
    settings = parse_settings(pgdr_variables(worker_env, DUMMY_ENV))
    receiver = env_mapping(services["pgdr-wal-receiver"]["environment"])
    assert str(settings.pg_bindir) == receiver["PGDR_PG_BINDIR"] == PG_BINDIR


def test_dockerfile_installs_the_pinned_requirements():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "COPY docker/requirements.txt /opt/pgdr/requirements.txt" in text
    assert re.search(r'pip install --no-cache-dir "apache-airflow==\$\{AIRFLOW_VERSION\}"'
                     r' -r /opt/pgdr/requirements.txt',
                     text)
    pins = {}
    for line in IMAGE_REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{line!r} is not pinned with =="
            pins[name.lower()] = version
    repo_pins = dict(line.lower().split("==", 1) for line in
                     (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").split() if "==" in line)
    for name, version in pins.items():
        assert repo_pins.get(name) == version, \
            f"{name}=={version} differs from requirements.txt ({repo_pins.get(name)})"
    for needed in ("apache-airflow-providers-amazon", "apache-airflow-providers-postgres",
                   "apache-airflow-providers-slack", "apache-airflow-providers-standard", "zstandard"):
        assert needed in pins, f"the image does not pin {needed}"
    assert pins["apache-airflow-providers-amazon"] and not any(n.startswith(("pytest", "moto", "hypothesis"))
                                                               for n in pins)


def test_image_directories_back_the_named_volumes(compose):
    text = DOCKERFILE.read_text(encoding="utf-8")
    created = re.search(r"^RUN install -d -o airflow -g root -m 0770 ([^\n]+\\\n[^\n]+)$", text,
                        re.MULTILINE).group(1).replace("\\", " ").split()
    for _source, target in volume_entries(compose["services"]["airflow-worker"]):
        if target.startswith(("/opt/airflow/staging", "/opt/airflow/pitr", "/opt/airflow/restore", "/var/lib/pgdr")):
            assert target in created, f"a fresh volume at {target} would be owned by root"


# ---------------------------------------------------------------------------------- real AWS S3
def test_aws_overlay_targets_aws_with_sse_kms(compose, aws_overlay):
    assert set(aws_overlay["services"]) <= set(compose["services"])
    assert set(aws_overlay["services"]) == set(AIRFLOW_IMAGE_SERVICES)
    with_aws = overlay(compose, aws_overlay)
    values = {**DUMMY_ENV, "PGDR_S3_REGION": "eu-west-1", "PGDR_KMS_KEY_ID": "alias/pgdr-backups"}
    for name in AIRFLOW_IMAGE_SERVICES:
        env = service_env(with_aws, name)
        s3 = container_conn(env, "AIRFLOW_CONN_BACKUP_S3", values)
        assert s3 == {"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}, \
            "AWS endpoints and the default credential chain: no endpoint_url, no keys"
        settings = parse_settings(pgdr_variables(env, values))
        assert settings.sse_args == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/pgdr-backups"}
        # everything else stays as the base file has it
        assert env["AIRFLOW_CONN_CARE_COMMONS_DB"] == service_env(compose, name)["AIRFLOW_CONN_CARE_COMMONS_DB"]
    for missing in ("PGDR_S3_REGION", "PGDR_KMS_KEY_ID"):
        with pytest.raises(KeyError, match=missing):
            for _path, value in iter_strings(aws_overlay):
                interpolate(value, {k: v for k, v in values.items() if k != missing})


# ------------------------------------------------ the init script and the WAL receiver, run for real
RUN_AS = "postgres" if os.geteuid() == 0 else None
PASSWORDS = {
    "PGDR_BACKUP_PASSWORD": "bk3f9a1c77e2d4",
    "PGDR_REPLICATION_PASSWORD": "rp81d0b4c2aa5e",
    "PGDR_ADMIN_PASSWORD": "ad5e6f7a8b9c0d",
    "PGDR_MARKERS_PASSWORD": "mk4c2e9a0b7d13",
    "PGDR_RETENTION_PASSWORD": "rt9b1d3f5a7c24",
}


def _login(cluster, user: str, password: str, dbname: str = "care_commons"):
    conn = psycopg2.connect(host=cluster.host, port=cluster.port, dbname=dbname, user=user, password=password,
                            connect_timeout=10)
    conn.autocommit = True
    return conn


def _query(conn, sql: str):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else None


def _run_init_script(cluster, passwords: dict[str, str]) -> subprocess.CompletedProcess:
    """The script as the postgres image's entrypoint runs it: its environment, no PGOPTIONS."""
    env = {"PATH": f"{cluster.bindir}:{os.environ['PATH']}", "POSTGRES_USER": "postgres",
           "POSTGRES_DB": "care_commons", "PGDATA": str(cluster.data_dir), "PGHOST": cluster.host,
           "PGPORT": str(cluster.port), **passwords}
    return subprocess.run(["bash", str(INIT_SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def care_commons_db(services):
    """A PostgreSQL 15 cluster set up the way care-commons-db is on its first start: the compose
    file's server settings (synchronous_standby_names included), the database created under the
    compose file's PGOPTIONS, then the init script; a table under row-level security."""
    from psycopg2 import sql

    from harness.pg_cluster import start_cluster

    cluster = start_cluster()
    try:
        # only what the harness needs; replication is allowed by the init script's entry alone
        (cluster.data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        for name, value in {**server_settings(services), "log_statement": "all"}.items():
            cluster.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        cluster.stop()
        cluster.start()
        db_env = env_mapping(services["care-commons-db"]["environment"])
        created = subprocess.run(
            [str(cluster.bindir / "psql"), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-U", "postgres", "-d", "postgres",
             "-c", "CREATE DATABASE care_commons"],
            env={**cluster.tool_env(), "PGOPTIONS": db_env["PGOPTIONS"]}, check=False, capture_output=True, text=True,
            timeout=30)
        assert created.returncode == 0, created.stderr
        result = _run_init_script(cluster, PASSWORDS)
        assert result.returncode == 0, result.stdout + result.stderr
        cluster.execute("SELECT pg_reload_conf()")
        conn = cluster.connect("care_commons")
        _query(conn, "SET synchronous_commit = local")
        _query(conn, "CREATE TABLE visit_notes (id int PRIMARY KEY, note text)")
        _query(conn, "INSERT INTO visit_notes SELECT g, 'note ' || g FROM generate_series(1, 3) g")
        _query(conn, "ALTER TABLE visit_notes ENABLE ROW LEVEL SECURITY")   # no policy: others see nothing
        conn.close()
        yield cluster
    finally:
        cluster.destroy()


def test_server_takes_the_compose_settings_and_commits_wait_for_the_receiver(services, care_commons_db):
    cluster = care_commons_db
    for name, value in server_settings(services).items():
        assert cluster.execute("SELECT current_setting(%s)", params=(name,)) == [(value,)], name
    assert cluster.execute("SELECT count(*) FROM pg_stat_replication") == [(0,)]
    # what the entrypoint and the init script are protected from: with no receiver, a commit waits
    conn = cluster.connect("care_commons")
    pid = conn.get_backend_pid()
    waiter = threading.Thread(target=_query, args=(conn, "CREATE TABLE sync_probe (id int)"))
    waiter.start()
    try:
        wait_for(lambda: cluster.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", params=(pid,))
                  == [("SyncRep",)], 15, "the commit to wait for the synchronous standby")
        assert waiter.is_alive()
    finally:
        cluster.execute("SELECT pg_cancel_backend(%s)", params=(pid,))
        waiter.join(15)
        conn.close()
    assert not waiter.is_alive()


def test_init_script_creates_one_least_privilege_role_per_duty(care_commons_db):
    cluster = care_commons_db
    assert cluster.execute("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == [(0,)]
    roles = {row[0]: row[1:] for row in cluster.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolreplication, rolbypassrls, rolcreatedb, rolcreaterole "
        "FROM pg_roles WHERE rolname LIKE 'pgdr\\_%'")}
    assert roles == {
        "pgdr_backup": (True, False, True, True, False, False),
        "pgdr_replication": (True, False, True, False, False, False),
        "pgdr_admin": (True, True, False, False, False, False),
        "pgdr_markers": (True, False, False, False, False, False),
        "pgdr_retention": (True, False, False, True, False, False),
    }
    assert cluster.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgdr'",
                           dbname="care_commons") == [("pgdr_markers",)]
    with _login(cluster, "pgdr_backup", PASSWORDS["PGDR_BACKUP_PASSWORD"]) as conn:
        assert _query(conn, "SELECT count(*) FROM visit_notes") == [(3,)], "row-level security hid rows from dumps"
        assert _query(conn, "SELECT system_identifier > 0 FROM pg_control_system()") == [(True,)]
        assert _query(conn, "SELECT pg_has_role('pg_monitor', 'member')") == [(True,)]
    with _login(cluster, "pgdr_replication", PASSWORDS["PGDR_REPLICATION_PASSWORD"]) as conn:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            _query(conn, "SELECT count(*) FROM visit_notes")
    with _login(cluster, "pgdr_admin", PASSWORDS["PGDR_ADMIN_PASSWORD"]) as conn:
        assert _query(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(True,)]
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _login(cluster, "pgdr_admin", "wrong")


def test_init_script_is_idempotent_and_keeps_passwords_out_of_the_log(care_commons_db):
    cluster = care_commons_db
    changed = {**PASSWORDS, "PGDR_BACKUP_PASSWORD": "bkrotated0c1d2e3"}
    result = _run_init_script(cluster, changed)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        hba = (cluster.data_dir / "pg_hba.conf").read_text()
        assert hba.count("host    replication     pgdr_backup,pgdr_replication     all     scram-sha-256") == 1
        _login(cluster, "pgdr_backup", changed["PGDR_BACKUP_PASSWORD"]).close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            _login(cluster, "pgdr_backup", PASSWORDS["PGDR_BACKUP_PASSWORD"])
    finally:
        assert _run_init_script(cluster, PASSWORDS).returncode == 0
    log = cluster.log_file.read_text()
    assert "statement: CREATE DATABASE care_commons" in log, "log_statement = all is on: statements are logged"
    for password in [*PASSWORDS.values(), changed["PGDR_BACKUP_PASSWORD"]]:
        assert password not in log and password not in result.stdout + result.stderr


def _run_summarize_wal_script(cluster) -> subprocess.CompletedProcess:
    env = {"PATH": f"{cluster.bindir}:{os.environ['PATH']}", "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres",
           "PGHOST": cluster.host, "PGPORT": str(cluster.port)}
    return subprocess.run(["bash", str(SUMMARIZE_WAL_SCRIPT)], check=False, env=env, capture_output=True, text=True,
                          timeout=60)


def test_summarize_wal_is_turned_on_where_the_major_has_it_and_15_still_starts(care_commons_db, tmp_path):
    """Incremental base backups need summarize_wal = on (17+); 15 and 16 do not know the setting, so the
    init script sets it only where it exists: run for real on 15 (the compose-configured cluster) and 18."""
    from harness.pg_cluster import PgCluster, free_port, pg_bindir

    on_15 = _run_summarize_wal_script(care_commons_db)
    assert on_15.returncode == 0, on_15.stdout + on_15.stderr
    assert "base backups stay full" in on_15.stdout
    assert care_commons_db.execute("SELECT count(*) FROM pg_settings WHERE name = 'summarize_wal'") == [(0,)]

    base = Path(tempfile.mkdtemp(prefix="pgdr-pg18-"))
    cluster = PgCluster(base_dir=base, port=free_port(), bindir=pg_bindir(18))
    try:
        cluster.initdb()
        cluster.start()
        # as the postgres image leaves it: the harness turns it on, the image does not
        cluster.execute("ALTER SYSTEM SET summarize_wal = off")
        cluster.execute("SELECT pg_reload_conf()")
        wait_for(lambda: cluster.execute("SHOW summarize_wal") == [("off",)], 10, "summarize_wal off")
        for _ in range(2):   # idempotent
            result = _run_summarize_wal_script(cluster)
            assert result.returncode == 0, result.stdout + result.stderr
        wait_for(lambda: cluster.execute("SHOW summarize_wal") == [("on",)], 10, "summarize_wal on after the script")
        cluster.stop()
        cluster.start()
        assert cluster.execute("SHOW summarize_wal") == [("on",)], "kept across a restart (ALTER SYSTEM)"
    finally:
        cluster.destroy()


def test_the_receiver_as_compose_runs_it_streams_synchronously_and_passes_its_healthcheck(services, care_commons_db,
                                                                                          tmp_path):
    cluster = care_commons_db
    receiver = services["pgdr-wal-receiver"]
    root = Path(tempfile.mkdtemp(prefix="pgdr-wal-"))   # not under pytest's root-only tmp tree
    wal_dir = root / "care_commons_db"
    wal_dir.mkdir()
    if RUN_AS:
        shutil.chown(root, RUN_AS)
        shutil.chown(wal_dir, RUN_AS)
    argv = receiver["entrypoint"] + receiver["command"]
    compose_dir = argv[argv.index("--directory") + 1]
    argv[argv.index("--directory") + 1] = str(wal_dir)
    argv = [sys.executable, *argv[1:], *(["--run-as", RUN_AS] if RUN_AS else [])]
    values = {**PASSWORDS, "CARE_COMMONS_DB_HOST": cluster.host, "CARE_COMMONS_DB_PORT": str(cluster.port)}
    env = {name: interpolate(value, values) for name, value in env_mapping(receiver["environment"]).items()}
    env.update(PATH=os.environ["PATH"], PYTHONPATH=str(REPO_ROOT / "plugins"))
    check = interpolate(receiver["healthcheck"]["test"][1], {}).replace(compose_dir, str(wal_dir))

    def healthy() -> bool:
        return subprocess.run(["sh", "-c", check], check=False, capture_output=True, timeout=10).returncode == 0

    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: cluster.execute(
            "SELECT usename, sync_state FROM pg_stat_replication WHERE application_name = 'pgdr_receiver' "
            "AND state = 'streaming'") == [("pgdr_replication", "sync")], 60, "the receiver streaming synchronously")
        status = json.loads((wal_dir / "receiver.status.json").read_text())
        for pid in (process.pid, status["pid"]):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert PASSWORDS["PGDR_REPLICATION_PASSWORD"] not in cmdline
        # an application commit over the network returns: the synchronous standby confirms it
        app = _login(cluster, "pgdr_admin", PASSWORDS["PGDR_ADMIN_PASSWORD"])
        committed = threading.Thread(target=_query, args=(app, "CREATE TABLE after_receiver (id int)"))
        committed.start()
        committed.join(20)
        assert not committed.is_alive(), "a commit waited with the receiver streaming"
        app.close()
        assert healthy(), "the compose healthcheck fails on a running receiver"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        cluster.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")
    assert process.returncode == 0, output
    assert PASSWORDS["PGDR_REPLICATION_PASSWORD"] not in output
    assert not healthy(), "the compose healthcheck passes on a stopped receiver"
    shutil.rmtree(root, ignore_errors=True)
