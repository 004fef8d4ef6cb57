"""``masked_url``: no password of a URL reaches a log line, an error or a page."""

from __future__ import annotations

import pytest

from consumer.config.settings import gives_password, masked_url, password_unencoded


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://alice:secret@127.0.0.1:6379/0", "redis://alice:****@127.0.0.1:6379/0"),
    ("redis://:secret@cache:6379/2", "redis://:****@cache:6379/2"),
    ("redis://alice:pa%23ss@127.0.0.1:6379/0", "redis://alice:****@127.0.0.1:6379/0"),
    ("https://svc:p@ss@api.example:8443/events", "https://svc:****@api.example:8443/events"),
    ("redis://127.0.0.1:6379/0?password=topsecret",
     "redis://127.0.0.1:6379/0?password=****"),
    ("rediss://cache:6380/0?ssl_cert_reqs=none&Password=topsecret&db=1",
     "rediss://cache:6380/0?ssl_cert_reqs=none&Password=****&db=1"),
    # a reserved character, not percent-encoded, ends the authority inside the password
    ("redis://alice:p#ss@127.0.0.1:16379/0", "redis://****@127.0.0.1:16379/0"),
    ("redis://alice:pa/ss@127.0.0.1:16379/0", "redis://****@127.0.0.1:16379/0"),
    ("redis://alice:pa?ss@127.0.0.1:16379/0", "redis://****@127.0.0.1:16379/0"),
    ("redis://127.0.0.1:6379/0?username=u&password=ab#cd/ef",
     "redis://127.0.0.1:6379/0?username=u&password=****"),
])
def test_a_password_is_masked_wherever_the_url_holds_it(url: str, shown: str) -> None:
    assert masked_url(url) == shown


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://alice@cache:6379/0", "sqlite:///x.sqlite3",
    "https://ehr.example/api/notify@v2", "memory://",
])
def test_a_url_without_a_password_is_shown_as_it_is(url: str) -> None:
    assert masked_url(url) == url


def test_an_unencoded_reserved_character_in_a_password_is_recognised() -> None:
    assert password_unencoded("redis://alice:p#ss@127.0.0.1:16379/0")
    assert not password_unencoded("redis://alice:pa%23ss@127.0.0.1:16379/0")
    assert not password_unencoded("https://ehr.example/api/notify@v2")
    assert password_unencoded("redis://127.0.0.1:6379/0?password=ab#cd")
    assert not password_unencoded("redis://127.0.0.1:6379/0?password=ab%23cd")


def test_a_password_is_found_in_the_user_information_or_a_parameter() -> None:
    assert gives_password("redis://:s3cret@cache:6379/0")
    assert gives_password("redis://cache:6379/0?db=1&Password=s3cret")
    assert not gives_password("redis://alice@cache:6379/0")
    assert not gives_password("redis://cache:6379/0?notapassword=x")
