"""CHAP secrets at rest: Fernet, with a key derived from SECRET_KEY.

The derivation has its own ``info`` label, so the key differs from anything
else derived from SECRET_KEY; changing SECRET_KEY makes stored secrets
unreadable (targets then fail to reconcile with a clear error).
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from diskvault.config import Settings
from diskvault.targets.errors import TargetError

_INFO = b"diskvault targets chap v1"


class SecretUnreadable(TargetError):
    template = (
        "a stored CHAP secret cannot be decrypted (was DISKVAULT_SECRET_KEY changed?); "
        "delete the target and create it again with its CHAP secret"
    )


@lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(settings: Settings, plain: str) -> str:
    return _fernet(settings.SECRET_KEY).encrypt(plain.encode()).decode()


def decrypt(settings: Settings, token: str) -> str:
    try:
        return _fernet(settings.SECRET_KEY).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable() from None
