"""The security building blocks on their own: token checks, grants, access, buckets, guards.

Real PyJWT tokens and real RSA keys; the live-server tests build on these rules.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

import jwt
import pytest

from reference_server.auth import (
    VERIFIED_TOKENS,
    AuthError,
    InsecureDevAuthenticator,
    JwtAuthenticator,
    KeyFileError,
    RoomGrants,
    check_secret,
    load_public_key,
)
from reference_server.auth_http import HttpGuard
from reference_server.authz import room_refusal
from reference_server.limits import (
    EXEMPT_CACHE,
    ConnectionLimits,
    RateLimiter,
    Verdict,
    peer_address,
)
from rtbench.protocol import ErrorCode
from tests.security.conftest import SECRET, RsaKeys, hs256

# ---------------------------------------------------------------- tokens


def test_hs256_accepts_good_and_refuses_forged_expired_and_malformed() -> None:
    auth = JwtAuthenticator(SECRET, "HS256")
    who = auth.identify(hs256("alice"))
    assert who.user == "alice" and who.grants is None
    cases = [
        (hs256("alice", secret="another-secret-0123456789abcdef-0123456789"), "invalid"),
        (hs256("alice", ttl=-60), "expired"),
        ("alice", "invalid"),
        (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "exp"),  # no exp
        (hs256("not a user!"), "user id"),
        (hs256("alice", rooms="lobby"), "rooms"),  # grants must be a list
        (hs256("alice", rooms=[""]), "rooms"),
    ]
    for token, why in cases:
        with pytest.raises(AuthError, match=why):
            auth.identify(token)
    with pytest.raises(AuthError, match="required"):
        auth.identify(None)


def test_a_verified_token_is_remembered_until_its_exp_and_only_its_exact_text() -> None:
    auth = JwtAuthenticator(SECRET, "HS256")
    exp = int(time.time()) + 2
    token = jwt.encode({"sub": "alice", "exp": exp}, SECRET, algorithm="HS256")
    first = auth.identify(token)
    assert auth.identify(token) is first  # remembered: no second signature check
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="invalid"):  # the remembered signature buys nothing
        auth.identify(f"{header}.{forged}.{signature}")
    with pytest.raises(AuthError, match="invalid"):
        # one character inside the signature (not the last: its low bits are padding)
        auth.identify(token[:-10] + ("B" if token[-10] == "A" else "A") + token[-9:])
    # Wait for the wall clock to pass exp: expiry by the clock is the behaviour under test.
    while time.time() < exp:
        time.sleep(0.05)
    with pytest.raises(AuthError, match="expired"):
        auth.identify(token)


def test_the_remembered_tokens_are_bounded() -> None:
    auth = JwtAuthenticator(SECRET, "HS256")
    tokens = [hs256(f"user{i}") for i in range(VERIFIED_TOKENS + 10)]
    for token in tokens:
        auth.identify(token)
    assert len(auth._verified) == VERIFIED_TOKENS
    assert tokens[0] not in auth._verified and tokens[-1] in auth._verified  # oldest go first
    assert auth.identify(tokens[0]).user == "user0"  # verified again in full


def test_alg_none_and_a_tampered_payload_are_refused() -> None:
    auth = JwtAuthenticator(SECRET, "HS256")
    unsigned = jwt.encode({"sub": "admin", "exp": 2**40}, None, algorithm="none")
    with pytest.raises(AuthError, match="invalid"):
        auth.identify(unsigned)
    header, payload, signature = hs256("alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="invalid"):
        auth.identify(f"{header}.{forged}.{signature}")


def test_rs256_verifies_with_the_public_key_and_refuses_key_confusion(rsa_keys: RsaKeys) -> None:
    auth = JwtAuthenticator(load_public_key(rsa_keys.public_pem), "RS256")
    who = auth.identify(rsa_keys.token("bob", rooms=["team-*"]))
    assert who.user == "bob" and who.grants is not None and who.grants.allows("team-x")
    # the classic attack: HS256 "signed" with the public key text as the shared secret
    public_text = rsa_keys.public_pem.read_bytes()
    confused = _hmac_token({"sub": "bob", "exp": 2**40}, public_text)
    with pytest.raises(AuthError, match="invalid"):
        auth.identify(confused)
    with pytest.raises(AuthError, match="invalid"):  # an HS256 token is not an RS256 one
        auth.identify(hs256("bob"))


def _hmac_token(claims: dict[str, object], key: bytes) -> str:
    """HS256 by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret."""
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def test_key_files_and_secrets_are_checked(rsa_keys: RsaKeys, tmp_path) -> None:
    with pytest.raises(KeyFileError, match="private key"):
        load_public_key(rsa_keys.private_pem)
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pem")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_public_key(tmp_path / "missing.pem")
    with pytest.raises(KeyFileError, match="at least 32"):
        check_secret("short")
    check_secret(SECRET)


def test_insecure_dev_reads_the_unverified_sub_and_rooms() -> None:
    auth = InsecureDevAuthenticator()
    assert auth.identify("carol").user == "carol"
    token = jwt.encode(
        {"sub": "dave", "rooms": ["a"]},
        "nobody-checks-this-key-0123456789abcdef",
        algorithm="HS256",
    )
    who = auth.identify(token)
    assert who.user == "dave" and who.grants is not None and who.grants.allows("a")
    with pytest.raises(AuthError):
        auth.identify("no spaces allowed")


# ---------------------------------------------------------------- grants and access


def test_grants_match_exact_names_and_star_patterns_only() -> None:
    grants = RoomGrants(("lobby", "team-*", "a.b[1]", "*-public"))
    assert grants.allows("lobby") and not grants.allows("lobby2")
    assert grants.allows("team-") and grants.allows("team-red/blue")
    assert not grants.allows("xteam-red")
    assert grants.allows("a.b[1]") and not grants.allows("aXb1")  # no regex leaks through
    assert grants.allows("news-public")
    assert grants.invites("lobby") and not grants.invites("team-red")


@dataclass
class FakeRoom:
    """The three attributes access control reads (a loaded Room has the same)."""

    private: bool = False
    members: dict[str, int] = field(default_factory=dict)
    dm: tuple[str, str] | None = None


def test_room_refusal_rules() -> None:
    team = RoomGrants(("team-*", "secret-club"))
    public, private = FakeRoom(), FakeRoom(private=True, members={"owner": 0})

    def code(user: str, grants: RoomGrants | None, name: str, room, create=False):
        refusal = room_refusal(user, grants, name, room, create=create)
        return refusal[0] if refusal else None

    assert code("u", None, "lobby", public) is None
    assert code("u", None, "lobby", None) is ErrorCode.UNKNOWN_ROOM
    assert code("u", None, "lobby", None, create=True) is None
    assert code("u", None, "club", private) is ErrorCode.FORBIDDEN
    assert code("owner", None, "club", private) is None
    assert code("u", team, "lobby", public) is ErrorCode.FORBIDDEN  # outside the ceiling
    assert code("u", team, "lobby", None, create=True) is ErrorCode.FORBIDDEN
    assert code("u", team, "team-red", public) is None
    assert code("u", team, "team-red", private) is ErrorCode.FORBIDDEN  # a pattern never invites
    assert code("u", team, "secret-club", private) is None  # an exact grant does
    dm = FakeRoom(private=True, members={"a": 0, "b": 0}, dm=("a", "b"))
    assert code("a", None, "dm:a:b", dm) is None
    assert code("a", team, "dm:a:b", dm) is None  # grants do not govern DMs
    assert code("c", RoomGrants(("*",)), "dm:a:b", dm) is ErrorCode.FORBIDDEN
    assert code("a", None, "dm:a:b:c", None) is ErrorCode.UNKNOWN_ROOM


# ---------------------------------------------------------------- rate limit


@dataclass
class Meter:
    allowance: float = 0.0
    data_at: float = 0.0
    strikes: int = 0


def test_token_bucket_warns_once_drops_and_closes_on_persistent_abuse() -> None:
    limiter, s = RateLimiter(rate_per_s=10, burst=5, abuse_frames=4), Meter()
    limiter.start(s, now=0.0)
    assert [limiter.admit(s, 0.0) for _ in range(5)] == [Verdict.PASS] * 5
    assert limiter.admit(s, 0.0) is Verdict.WARN
    assert limiter.admit(s, 0.0) is Verdict.DROP
    assert limiter.admit(s, 0.01) is Verdict.DROP  # 0.1 token: still not one
    assert limiter.admit(s, 0.11) is Verdict.PASS  # a token came back; the episode goes on
    assert limiter.admit(s, 0.11) is Verdict.DROP
    assert limiter.admit(s, 0.11) is Verdict.CLOSE  # fifth drop of the episode: past 4


def test_token_bucket_never_drops_a_client_at_its_rate_and_forgets_old_episodes() -> None:
    limiter, s = RateLimiter(rate_per_s=100, burst=10, abuse_frames=5), Meter()
    limiter.start(s, now=0.0)
    verdicts = {limiter.admit(s, i / 100) for i in range(10_000)}  # 100 s at exactly 100/s
    assert verdicts == {Verdict.PASS}
    for _ in range(10):
        limiter.admit(s, 100.0)
    assert limiter.admit(s, 100.0) is Verdict.WARN
    assert limiter.admit(s, 101.0) is Verdict.PASS  # refilled completely: episode over
    for _ in range(9):
        limiter.admit(s, 101.0)
    assert limiter.admit(s, 101.0) is Verdict.WARN  # a new episode warns again


# ---------------------------------------------------------------- connection limits


def test_per_ip_counts_skip_exempt_networks_and_release_on_close() -> None:
    limits = ConnectionLimits(per_user=2, per_ip=2, exempt=["127.0.0.0/8", "::1"])
    assert limits.open("127.0.0.5:4000") == (True, None)
    assert limits.open("[::1]:4000") == (True, None)
    assert limits.open("10.0.0.1:1") == (True, "10.0.0.1")
    assert limits.open("10.0.0.1:2") == (True, "10.0.0.1")
    assert limits.open("10.0.0.1:3") == (False, None)
    assert limits.open("::ffff:127.0.0.1:9") == (True, None)  # v4-mapped loopback
    limits.close("10.0.0.1")
    assert limits.open("10.0.0.1:4") == (True, "10.0.0.1")
    assert limits.user_full(2) and not limits.user_full(1)
    assert not ConnectionLimits(0, 0, []).user_full(10_000)
    assert peer_address("2001:db8::1:443") == "2001:db8::1"
    with pytest.raises(ValueError, match="not an address"):
        ConnectionLimits(1, 1, ["localhost"])


def test_remembered_exemptions_are_bounded_and_stay_right() -> None:
    limits = ConnectionLimits(per_user=0, per_ip=1, exempt=["127.0.0.0/8"])
    for round_ in range(2):  # the second round is answered from what was remembered
        for i in range(EXEMPT_CACHE + 100):
            exempt = f"127.0.{i // 256 % 256}.{i % 256}:{round_}"
            assert limits.open(exempt) == (True, None)
        assert len(limits._exempt_seen) <= EXEMPT_CACHE
        assert limits.open(f"10.1.0.{round_}:1") == (True, f"10.1.0.{round_}")
        assert limits.open(f"10.1.0.{round_}:2") == (False, None)


# ---------------------------------------------------------------- HTTP guard


def test_origin_allow_list_and_metrics_token() -> None:
    guard = HttpGuard(["https://chat.example.com", "https://*.example.org"], "m-token")
    assert guard.origin_refusal(None) is None  # not a browser: the token decides
    assert guard.origin_refusal("https://chat.example.com") is None
    assert guard.origin_refusal("HTTPS://Chat.Example.com/") is None
    assert guard.origin_refusal("https://a.b.example.org") is None
    assert guard.origin_refusal("https://evil.example.com") is not None
    assert guard.origin_refusal("https://example.org.evil.net") is not None
    assert guard.origin_refusal("null") is not None
    assert guard.metrics_allowed("Bearer m-token") and guard.metrics_allowed("bearer m-token")
    assert not guard.metrics_allowed("Bearer m-tokenX") and not guard.metrics_allowed(None)
    open_guard = HttpGuard([], "")
    assert open_guard.origin_refusal("https://anything") is None
    assert open_guard.metrics_allowed(None)
