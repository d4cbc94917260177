import os
import threading
from datetime import timedelta

import pytest

from diskvault.auth import security
from diskvault.auth.errors import InvalidToken

SECRET = "s" * 32


def test_argon2_hash_verifies_only_the_right_password() -> None:
    h = security.hash_password("correct horse")
    assert h.startswith("$argon2")
    assert security.verify_password(h, "correct horse")
    assert not security.verify_password(h, "wrong")
    assert not security.verify_password("not-a-hash", "x")


def test_token_roundtrip_and_kind_check() -> None:
    tok = security.encode_token(SECRET, sub="u", kind="access", ttl=timedelta(minutes=1))
    assert security.decode_token(SECRET, tok, kind="access")["sub"] == "u"
    with pytest.raises(InvalidToken, match="expected a refresh token"):
        security.decode_token(SECRET, tok, kind="refresh")


def test_expired_and_tampered_tokens_are_refused() -> None:
    old = security.encode_token(SECRET, sub="u", kind="access", ttl=timedelta(seconds=-5))
    with pytest.raises(InvalidToken, match="expired"):
        security.decode_token(SECRET, old, kind="access")
    tok = security.encode_token(SECRET, sub="u", kind="access", ttl=timedelta(minutes=1))
    head, body, sig = tok.split(".")
    with pytest.raises(InvalidToken):
        security.decode_token(SECRET, f"{head}.{body}x.{sig}", kind="access")
    with pytest.raises(InvalidToken):
        security.decode_token("other-secret-xxxxxxxx", tok, kind="access")


def test_api_tokens_store_only_a_hash() -> None:
    plain, digest = security.new_api_token()
    assert plain.startswith("dvt_") and digest == security.hash_api_token(plain)
    assert plain not in digest


def test_password_checks_run_in_their_own_low_priority_threads() -> None:
    """Finding 6: argon2 queues in a bounded pool instead of the shared worker threads."""
    pool = security.hashing_pool(2)
    try:

        def where() -> tuple[str, int]:
            tid = threading.get_native_id()
            return threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid)

        name, nice = pool.submit(where).result()
        assert name.startswith("argon2")
        assert nice >= security.HASHING_NICE
        assert pool._max_workers == 2
        stored = security.hash_password("right")
        assert pool.submit(security.verify_password, stored, "right").result()
        assert not pool.submit(security.verify_password, stored, "wrong").result()
    finally:
        pool.shutdown()
