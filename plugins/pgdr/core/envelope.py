"""Client-side envelope encryption of secret-bearing configuration files (``.env`` and the like).

Each backup draws a fresh random 256-bit data key; the files are sealed with it (AES-256-GCM,
a fresh nonce per object, the object's place bound in as associated data, so a blob copied to
another key or backup does not decrypt). Only the data key *wrapped* by a key-encryption key is
stored, in the manifest: either by a key held in an Airflow connection's password (base64 of 32
bytes) or by KMS (GenerateDataKey / Decrypt). The key-encryption key is never next to the backup,
never logged, never in XCom or a process's arguments.

Pure apart from the KMS client and the connection lookup, which are passed in or done by
:func:`key_from_connection`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pgdr.errors import Refused

MAGIC = b"PGDRENC1"
NONCE_SIZE = 12
KEY_SIZE = 32
ALGORITHM = "AES-256-GCM"


class KeyProblem(Refused, RuntimeError):
    """The key-encryption key is missing, malformed or not the one a backup was sealed with."""


def key_fingerprint(kek: bytes) -> str:
    """A short id of a key that reveals nothing about it (HMAC, not a hash of the key itself)."""
    return hmac.new(kek, b"pgdr key-encryption key id", hashlib.sha256).hexdigest()[:16]


def parse_kek(conn_id: str, password: str | None) -> bytes:
    """The key-encryption key from a connection's password: base64 of exactly 32 bytes."""
    if not password:
        raise KeyProblem(f"connection {conn_id!r} has no password: set it to the base64 of 32 random bytes "
                         "(e.g. python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')")
    try:
        key = base64.b64decode(password.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem(f"the password of connection {conn_id!r} is not base64; it must be the base64 of "
                         "32 random bytes") from None
    if len(key) != KEY_SIZE:
        raise KeyProblem(f"the password of connection {conn_id!r} decodes to {len(key)} bytes; a 256-bit key "
                         "(32 bytes, base64) is needed")
    return key


def key_from_connection(conn_id: str) -> bytes:
    """Read the key-encryption key from an Airflow connection (only ever inside a running task)."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception as err:  # noqa: BLE001 - AirflowNotFoundException and friends: say what to do
        raise KeyProblem(f"the config key connection {conn_id!r} is missing or unreadable "
                         f"({type(err).__name__}); create it with the base64 of 32 random bytes as its password, "
                         "kept outside the backup bucket (setting pgdr_config_key_conn_id)") from None
    return parse_kek(conn_id, conn.password)


@dataclass(frozen=True)
class DataKey:
    plaintext: bytes = b""
    wrapping: dict | None = None     # what goes into the manifest: method, ids, the wrapped key

    def __repr__(self) -> str:       # never print a key
        return f"DataKey(wrapping={self.wrapping!r})"


class ConnectionKeyWrapper:
    """Wraps data keys with a key held in an Airflow connection (AES-256-GCM key wrap)."""

    def __init__(self, conn_id: str, kek: bytes) -> None:
        self.conn_id = conn_id
        self._kek = kek

    def __repr__(self) -> str:
        return f"ConnectionKeyWrapper({self.conn_id!r})"

    def new_data_key(self, context: str) -> DataKey:
        data_key = os.urandom(KEY_SIZE)
        nonce = os.urandom(NONCE_SIZE)
        wrapped = AESGCM(self._kek).encrypt(nonce, data_key, context.encode())
        return DataKey(data_key, {"method": "connection", "conn_id": self.conn_id,
                                  "key_fingerprint": key_fingerprint(self._kek),
                                  "nonce": base64.b64encode(nonce).decode(),
                                  "wrapped_key": base64.b64encode(wrapped).decode(), "context": context})

    def unwrap(self, wrapping: dict) -> bytes:
        if wrapping.get("method") != "connection":
            raise KeyProblem(f"this backup's data key is wrapped by {wrapping.get('method')!r} "
                             f"({wrapping.get('kms_key_id') or ''}), not by a connection key")
        expected = wrapping.get("key_fingerprint")
        found = key_fingerprint(self._kek)
        if expected and expected != found:
            raise KeyProblem(f"the key in connection {self.conn_id!r} (key id {found}) is not the key this backup "
                             f"was sealed with (key id {expected}, connection {wrapping.get('conn_id')!r}); "
                             "nothing was decrypted")
        try:
            return AESGCM(self._kek).decrypt(base64.b64decode(wrapping["nonce"]),
                                             base64.b64decode(wrapping["wrapped_key"]),
                                             wrapping["context"].encode())
        except (InvalidTag, KeyError, ValueError):
            raise KeyProblem(f"the key in connection {self.conn_id!r} does not unwrap this backup's data key "
                             "(wrong key, or the manifest's wrapped key was altered); nothing was decrypted") from None


class KmsKeyWrapper:
    """Data keys from KMS GenerateDataKey; unwrapped with KMS Decrypt. The KMS key never leaves KMS."""

    def __init__(self, client, kms_key_id: str) -> None:
        self.client = client
        self.kms_key_id = kms_key_id

    def __repr__(self) -> str:
        return f"KmsKeyWrapper({self.kms_key_id!r})"

    def new_data_key(self, context: str) -> DataKey:
        response = self.client.generate_data_key(KeyId=self.kms_key_id, KeySpec="AES_256",
                                                 EncryptionContext={"pgdr": context})
        return DataKey(response["Plaintext"], {
            "method": "kms", "kms_key_id": self.kms_key_id, "context": context,
            "wrapped_key": base64.b64encode(response["CiphertextBlob"]).decode()})

    def unwrap(self, wrapping: dict) -> bytes:
        if wrapping.get("method") != "kms":
            raise KeyProblem(f"this backup's data key is wrapped by connection {wrapping.get('conn_id')!r}, "
                             "not by KMS; set pgdr_kms_key_id empty to restore it with the connection key")
        try:
            response = self.client.decrypt(CiphertextBlob=base64.b64decode(wrapping["wrapped_key"]),
                                           KeyId=wrapping.get("kms_key_id") or self.kms_key_id,
                                           EncryptionContext={"pgdr": wrapping["context"]})
        except Exception as err:  # noqa: BLE001 - access denied, wrong key, altered blob: say which key
            raise KeyProblem(f"KMS could not unwrap this backup's data key with key {wrapping.get('kms_key_id')!r} "
                             f"({type(err).__name__}); nothing was decrypted") from None
        return response["Plaintext"]


def wrapper_from_settings(settings, aws_client_factory=None):
    """The key wrapper the settings choose: KMS when pgdr_kms_key_id is set, else the connection key."""
    if settings.kms_key_id:
        if aws_client_factory is None:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            client = AwsBaseHook(aws_conn_id=settings.aws_conn_id, client_type="kms").get_conn()
        else:
            client = aws_client_factory()
        return KmsKeyWrapper(client, settings.kms_key_id)
    return ConnectionKeyWrapper(settings.config_key_conn_id, key_from_connection(settings.config_key_conn_id))


def wrapper_for(wrapping: dict, settings):
    """The wrapper that can open a backup sealed with ``wrapping`` (its method, whatever the settings say now)."""
    if wrapping.get("method") == "kms":
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        client = AwsBaseHook(aws_conn_id=settings.aws_conn_id, client_type="kms").get_conn()
        return KmsKeyWrapper(client, wrapping.get("kms_key_id") or settings.kms_key_id)
    conn_id = settings.config_key_conn_id
    return ConnectionKeyWrapper(conn_id, key_from_connection(conn_id))


def seal(data_key: bytes, plaintext: bytes, aad: str) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return MAGIC + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad.encode())


def open_sealed(data_key: bytes, blob: bytes, aad: str) -> bytes:
    if not blob.startswith(MAGIC):
        raise KeyProblem("not a pgdr encrypted object (bad header)")
    nonce = blob[len(MAGIC):len(MAGIC) + NONCE_SIZE]
    try:
        return AESGCM(data_key).decrypt(nonce, blob[len(MAGIC) + NONCE_SIZE:], aad.encode())
    except InvalidTag:
        raise KeyProblem("an encrypted object failed its authentication tag: altered, or sealed with another "
                         "key or for another place") from None
