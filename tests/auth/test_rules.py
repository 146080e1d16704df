"""Unit tests of the auth rules: no network, no database."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.auth.adapters.keys import KeyRing, SigningKey, ensure_dev_key, load_key_ring
from services.auth.domain.otp import OtpState, hash_code, judge_code, new_code, plausible_code
from services.auth.domain.passwords import (
    Argon2Parameters,
    PasswordHashing,
    PasswordPolicyError,
    check_password_policy,
    common_passwords,
)
from services.auth.domain.phones import InvalidPhone, mask_phone, normalize_phone
from services.auth.domain.ratelimit import Decision, Limit, decide, most_restrictive, window_start
from services.auth.domain.tokens import (
    RefreshTokenState,
    access_claims,
    csrf_matches,
    csrf_token_for,
    hash_opaque_token,
    judge_refresh,
    new_opaque_token,
)
from services.auth.domain.users import (
    FieldError,
    normalize_display_name,
    normalize_email,
    normalize_username,
    validate_preferences,
)
from services.auth.settings import AuthSettings
from shared.events import NotificationPreferences
from shared.security import decode_access_token, keys_from_jwks

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SECRET = b"s" * 32

# --- password policy -----------------------------------------------------------------


def test_password_shorter_than_ten_characters_is_refused() -> None:
    with pytest.raises(PasswordPolicyError, match="at least 10"):
        check_password_policy("Short1!", username="alice")


def test_password_equal_to_the_username_in_any_case_is_refused() -> None:
    with pytest.raises(PasswordPolicyError, match="username"):
        check_password_policy("AliceWonderland", username="alicewonderland")


@pytest.mark.parametrize("password", ["password123", "Qwertyuiop", "1234567890", "ILOVEYOU123"])
def test_common_passwords_from_the_shipped_list_are_refused(password: str) -> None:
    assert password.lower() in common_passwords()
    with pytest.raises(PasswordPolicyError, match="common"):
        check_password_policy(password, username="bob")


def test_a_long_uncommon_password_passes() -> None:
    check_password_policy("correct horse battery staple", username="bob")


def test_password_longer_than_the_cap_is_refused() -> None:
    with pytest.raises(PasswordPolicyError):
        check_password_policy("x1" * 200, username="bob")


async def test_argon2id_hash_verifies_and_wrong_password_or_unknown_account_fails() -> None:
    hasher = PasswordHashing(Argon2Parameters(time_cost=1, memory_kib=1024))
    stored = await hasher.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, "correct horse battery staple")
    assert not await hasher.verify(stored, "wrong password entirely")
    assert not await hasher.verify(None, "correct horse battery staple")  # dummy hash path


def test_hash_made_with_other_parameters_needs_rehash() -> None:
    old = PasswordHashing(Argon2Parameters(time_cost=1, memory_kib=1024))
    new = PasswordHashing(Argon2Parameters(time_cost=2, memory_kib=2048))
    stored = old.hash_sync("correct horse battery staple")
    assert not old.needs_rehash(stored)
    assert new.needs_rehash(stored)


# --- account fields --------------------------------------------------------------------


def test_username_rules() -> None:
    assert normalize_username("  Alice_01 ") == "Alice_01"
    for bad in ("ab", "-lead", "has space", "x" * 33, "emoji😀x"):
        with pytest.raises(FieldError) as info:
            normalize_username(bad)
        assert info.value.field == "username"


def test_email_domain_is_lower_cased_and_garbage_refused() -> None:
    assert normalize_email(" Ann.Lee@Example.COM ") == "Ann.Lee@example.com"
    for bad in ("no-at-sign", "a@b", "a b@example.com", "x@" + "d" * 300 + ".com"):
        with pytest.raises(FieldError):
            normalize_email(bad)


def test_display_name_is_trimmed_and_bounded() -> None:
    assert normalize_display_name("  Dr.   Who ") == "Dr. Who"
    assert normalize_display_name("   ") is None
    with pytest.raises(FieldError):
        normalize_display_name("x" * 65)


def test_quiet_hours_need_hhmm_pairs_and_a_real_time_zone() -> None:
    ok = NotificationPreferences(quiet_hours_start="22:00", quiet_hours_end="07:30", timezone="Europe/Moscow")
    assert validate_preferences(ok) == ok
    for bad, field in (
        (NotificationPreferences(quiet_hours_start="25:00", quiet_hours_end="07:00"), "quiet_hours_start"),
        (NotificationPreferences(quiet_hours_start="22:00"), "quiet_hours_end"),
        (NotificationPreferences(timezone="Mars/Olympus"), "timezone"),
        (NotificationPreferences(timezone="../../etc/passwd"), "timezone"),
    ):
        with pytest.raises(FieldError) as info:
            validate_preferences(bad)
        assert field in info.value.field


# --- phones ----------------------------------------------------------------------------


def test_phone_numbers_are_normalized_to_e164() -> None:
    assert normalize_phone("+7 (912) 345-67-89") == "+79123456789"
    assert normalize_phone("8 912 345 67 89", "RU") == "+79123456789"
    for bad in ("12345", "+1 555", "not a phone", "+7" + "9" * 40):
        with pytest.raises(InvalidPhone):
            normalize_phone(bad)


def test_masked_phone_shows_country_code_and_last_four_digits_only() -> None:
    assert mask_phone("+79123451234") == "+7 *** ***-12-34"
    assert "345" not in mask_phone("+79123451234").replace("-12-34", "")


# --- tokens ----------------------------------------------------------------------------


def test_access_claims_carry_every_required_claim_and_fifteen_minutes() -> None:
    user, sid = uuid.uuid4(), uuid.uuid4()
    claims = access_claims(
        user_id=user,
        role="ADMIN",
        session_id=sid,
        issuer="iss",
        audience="aud",
        now=NOW,
        ttl=timedelta(minutes=15),
    )
    assert claims["sub"] == str(user) and claims["role"] == "ADMIN" and claims["typ"] == "access"
    assert claims["iss"] == "iss" and claims["aud"] == "aud" and claims["sid"] == str(sid)
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]


def test_refresh_verdicts() -> None:
    live = RefreshTokenState(expires_at=NOW + timedelta(days=1), rotated_at=None, family_revoked_at=None)
    assert judge_refresh(live, NOW) == "ok"
    assert judge_refresh(None, NOW) == "unknown"
    rotated = RefreshTokenState(expires_at=live.expires_at, rotated_at=NOW, family_revoked_at=None)
    assert judge_refresh(rotated, NOW) == "reused"
    revoked = RefreshTokenState(expires_at=live.expires_at, rotated_at=NOW, family_revoked_at=NOW)
    assert judge_refresh(revoked, NOW) == "revoked"
    assert judge_refresh(live, NOW + timedelta(days=2)) == "expired"


def test_opaque_tokens_are_random_and_stored_only_as_hashes() -> None:
    a, b = new_opaque_token(), new_opaque_token()
    assert a != b and len(a) >= 43
    assert hash_opaque_token(a) != a.encode() and len(hash_opaque_token(a)) == 32


def test_csrf_token_is_bound_to_the_session() -> None:
    sid = uuid.uuid4()
    token = csrf_token_for(SECRET, sid)
    assert csrf_matches(SECRET, sid, token)
    assert not csrf_matches(SECRET, uuid.uuid4(), token)
    assert not csrf_matches(SECRET, sid, None)
    assert not csrf_matches(b"other" * 8, sid, token)


# --- one-time codes --------------------------------------------------------------------


def test_codes_are_six_digits() -> None:
    codes = {new_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 150
    assert not plausible_code("12345a") and not plausible_code(
        "\uff11\uff12\uff13\uff14\uff15\uff16"
    )  # full-width digits


def _state(code: str, *, attempts: int = 1, expires_in: int = 300, consumed: bool = False) -> OtpState:
    return OtpState(
        code_hash=hash_code(SECRET, "+79123456789", code),
        expires_at=NOW + timedelta(seconds=expires_in),
        attempts=attempts,
        consumed=consumed,
    )


def test_code_rules() -> None:
    judge = {"secret": SECRET, "phone": "+79123456789", "now": NOW, "max_attempts": 5}
    assert judge_code(_state("123456"), code="123456", **judge) == "ok"  # type: ignore[arg-type]
    assert judge_code(_state("123456"), code="654321", **judge) == "invalid"  # type: ignore[arg-type]
    assert judge_code(_state("123456", expires_in=-1), code="123456", **judge) == "invalid"  # type: ignore[arg-type]
    assert judge_code(_state("123456", consumed=True), code="123456", **judge) == "invalid"  # type: ignore[arg-type]
    assert judge_code(_state("123456", attempts=6), code="123456", **judge) == "invalid"  # type: ignore[arg-type]
    assert judge_code(None, code="123456", **judge) == "invalid"  # type: ignore[arg-type]


def test_code_hash_is_keyed_by_secret_and_phone() -> None:
    assert hash_code(SECRET, "+79123456789", "000000") != hash_code(b"x" * 32, "+79123456789", "000000")
    assert hash_code(SECRET, "+79123456789", "000000") != hash_code(SECRET, "+79123456780", "000000")


# --- rate-limit arithmetic --------------------------------------------------------------


def test_fixed_windows_and_decisions() -> None:
    limit = Limit("login-ip", 3, 60)
    assert window_start(125.5, 60) == 120
    first = decide(1, limit, 125.5)
    assert first.allowed and first.remaining == 2 and first.reset_s == 55
    third = decide(3, limit, 179.2)
    assert third.allowed and third.remaining == 0 and third.reset_s == 1
    fourth = decide(4, limit, 130)
    assert not fourth.allowed and fourth.remaining == 0
    assert fourth.headers() == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "50",
        "Retry-After": "50",
    }
    assert "Retry-After" not in first.headers()


def test_most_restrictive_prefers_a_refusal_then_the_fewest_left() -> None:
    a = Decision(True, 10, 5, 30)
    b = Decision(True, 3, 1, 10)
    refused = Decision(False, 5, 0, 99)
    assert most_restrictive([a, b]) == b
    assert most_restrictive([a, refused, b]) == refused
    assert most_restrictive([]) is None


# --- keys ------------------------------------------------------------------------------


def test_generated_key_signs_tokens_that_shared_security_accepts(tmp_path: Path) -> None:
    ring = load_key_ring(
        directory=tmp_path, private_key_pem=None, private_key_file=None, active_kid=None, generate=True
    )
    jwks = ring.jwks()
    entry = jwks["keys"][0]
    assert entry["alg"] == "ES256" and entry["use"] == "sig" and entry["kid"] == ring.active.kid
    assert "d" not in entry
    user = uuid.uuid4()
    claims = access_claims(
        user_id=user,
        role="USER",
        session_id=uuid.uuid4(),
        issuer="chat-auth",
        audience="chat",
        now=datetime.now(UTC),
        ttl=timedelta(minutes=15),
    )
    principal = decode_access_token(
        ring.sign(claims), keys_from_jwks(jwks), issuer="chat-auth", audience="chat"
    )
    assert principal.user_id == user


def test_key_id_is_the_same_in_every_process(tmp_path: Path) -> None:
    ensure_dev_key(tmp_path)
    pem = next(tmp_path.glob("*.pem")).read_bytes()
    assert SigningKey.from_pem(pem).kid == SigningKey.from_pem(pem).kid


_GENERATE = (
    "import sys; from pathlib import Path; "
    "from services.auth.adapters.keys import load_key_ring, load_secret; "
    "d = Path(sys.argv[1]); "
    "load_key_ring(directory=d, private_key_pem=None, private_key_file=None, active_kid=None, "
    "generate=True); "
    "load_secret(directory=d, configured=None, generate=True)"
)


def test_processes_starting_together_generate_one_key_and_one_secret(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "keys"
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", _GENERATE, str(target)], cwd=root, stdout=subprocess.DEVNULL)
        for _ in range(4)
    ]
    assert all(proc.wait(60) == 0 for proc in procs)
    assert len(list(target.glob("*.pem"))) == 1
    assert len((target / "hmac.secret").read_bytes()) == 64


def test_rotation_publishes_every_key_and_signs_with_the_chosen_one(tmp_path: Path) -> None:
    from services.auth.adapters.keys import generate_key_file

    first = SigningKey.from_pem(generate_key_file(tmp_path).read_bytes())
    second = SigningKey.from_pem(generate_key_file(tmp_path).read_bytes())
    ring = load_key_ring(
        directory=tmp_path, private_key_pem=None, private_key_file=None, active_kid=first.kid, generate=False
    )
    assert {k["kid"] for k in ring.jwks()["keys"]} == {first.kid, second.kid}
    assert ring.active.kid == first.kid


def test_production_key_comes_from_env_and_is_never_generated(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    ring = load_key_ring(
        directory=tmp_path / "absent",
        private_key_pem=pem,
        private_key_file=None,
        active_kid=None,
        generate=False,
    )
    assert ring.active.kid == SigningKey.from_pem(pem).kid
    assert not (tmp_path / "absent").exists()
    with pytest.raises(Exception, match="no signing key"):
        KeyRing([])


def test_production_settings_refuse_missing_keys_and_secrets() -> None:
    with pytest.raises(ValueError, match="AUTH_JWT_PRIVATE_KEY"):
        AuthSettings(environment="production")
    with pytest.raises(ValueError, match="AUTH_SECRET_KEY"):
        AuthSettings(environment="production", jwt_private_key="pem")
    AuthSettings(environment="production", jwt_private_key="pem", secret_key="k" * 32)


def test_default_limits_match_the_specification() -> None:
    s = AuthSettings(environment="test")
    assert (s.otp_ttl_s, s.otp_max_attempts, s.otp_resend_cooldown_s) == (300, 5, 60)
    assert (s.otp_daily_per_phone, s.otp_daily_per_ip) == (5, 20)
    assert s.access_token_ttl_s == 900 and s.refresh_token_ttl_s == 30 * 86400
    assert s.password_min_length == 10
