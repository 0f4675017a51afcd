"""API keys: where they come from, how a caller is identified, and the exposure rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.admission.auth import (
    BearerAuth,
    anonymous_id,
    is_loopback,
    load_keys,
    parse_keys,
    refuse_exposure_without_auth,
)
from deployments.errors import Unauthorized


def test_off_without_keys_and_every_bad_header_refused_with_a_challenge() -> None:
    assert BearerAuth({}).identify(None) is None
    auth = BearerAuth({"s3cret": "team-a"})
    assert auth.identify("Bearer s3cret") == "team-a"
    assert auth.identify("bearer  s3cret ") == "team-a"
    for header in (None, "", "Bearer", "Bearer ", "Basic s3cret", "Bearer wrong", "s3cret"):
        with pytest.raises(Unauthorized) as info:
            auth.identify(header)
        assert info.value.status_code == 401
        assert info.value.headers() == {"WWW-Authenticate": "Bearer"}


def test_a_key_file_names_its_clients_and_never_the_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    a, b = "a" * 32, "b" * 32
    keys.write_text(f"# rotated 2026-12\nteam-a:{a}\n\n  {b}  \n")
    loaded = load_keys("UNSET_VARIABLE_FOR_TEST", keys)
    assert loaded == {a: "team-a", b: anonymous_id(b)}
    assert b[:8] not in anonymous_id(b)
    auth = BearerAuth(loaded)
    assert auth.identify(f"Bearer {a}") == "team-a"
    assert auth.identify(f"Bearer {b}").startswith("key-")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("team a:" + "t" * 20 + "\n", "line 1"),
        (":" + "t" * 20 + "\n", "line 1"),
        ("a:" + "x" * 20 + "\nb:" + "x" * 20 + "\n", "listed twice"),
        ("team-a:short\n", "at least 16 characters"),
        ("short\n", "at least 16 characters"),
    ],
)
def test_a_bad_key_file_says_which_line(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_keys(text, "auth_token_file k")


def test_the_file_wins_and_an_unreadable_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_UNDER_TEST", "from-the-environment")
    from_env = load_keys("TOKEN_UNDER_TEST", None)
    assert from_env == {"from-the-environment": anonymous_id("from-the-environment")}
    secret = tmp_path / "token"
    secret.write_text("from-the-secret-file\n")
    assert list(load_keys("TOKEN_UNDER_TEST", secret)) == ["from-the-secret-file"]
    monkeypatch.setenv("TOKEN_UNDER_TEST", "short")
    with pytest.raises(ValueError, match="at least 16"):
        load_keys("TOKEN_UNDER_TEST", None)
    with pytest.raises(ValueError, match="cannot be read"):
        load_keys("TOKEN_UNDER_TEST", tmp_path / "missing")
    monkeypatch.delenv("TOKEN_UNDER_TEST")
    assert load_keys("TOKEN_UNDER_TEST", None) == {}


def test_listening_beyond_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        refuse_exposure_without_auth(host, auth_enabled=False, where="http_options.host")
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match="beyond loopback, but no auth token"):
            refuse_exposure_without_auth(host, auth_enabled=False, where="http_options.host")
        refuse_exposure_without_auth(host, auth_enabled=True, where="http_options.host")
