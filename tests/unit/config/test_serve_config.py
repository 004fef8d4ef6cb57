"""``[serve]``: the review page's settings, from the file and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config.settings import ServeUser, load_settings
from consumer.errors import ConfigError

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_bind_localhost_with_nobody_allowed_in() -> None:
    serve = load_settings(None, env={}).serve
    assert (serve.host, serve.port, serve.users, serve.public_url) == ("127.0.0.1", 8088, (),
                                                                       None)
    assert serve.session_ttl_ms == 8 * 3_600_000


def test_users_come_from_the_file_and_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    path = _file(tmp_path, f"""
[serve]
users = [{{ name = "ana", password_hash = "{HASH}", role = "operator" }},
         {{ name = "bo", password_hash = "{HASH}", role = "viewer" }}]
session_secret = "{'s' * 40}"
trace_url = "http://127.0.0.1:16686/trace/{{trace_id}}"
public_url = "https://review.example/"
""")
    serve = load_settings(path, env={}).serve
    assert serve.users == (ServeUser(name="ana", password_hash=HASH, role="operator"),
                           ServeUser(name="bo", password_hash=HASH, role="viewer"))
    assert serve.public_url == "https://review.example"
    assert HASH not in repr(serve)
    assert "s" * 40 not in repr(serve)


def test_the_environment_sets_users_as_a_toml_array_and_the_port() -> None:
    env = {"CLINIC_EVENTS_SERVE_USERS":
           f'[{{ name = "ana", password_hash = "{HASH}", role = "viewer" }}]',
           "CLINIC_EVENTS_SERVE_PORT": "9000"}
    serve = load_settings(None, env=env).serve
    assert serve.port == 9000
    assert serve.users[0].name == "ana"


@pytest.mark.parametrize(("env", "message"), [
    ({"CLINIC_EVENTS_SERVE_PORT": "0"}, r"serve.port must be a TCP port"),
    ({"CLINIC_EVENTS_SERVE_TRACE_URL": "http://jaeger/trace/"},
     r"serve.trace_url must contain \{trace_id\}"),
    ({"CLINIC_EVENTS_SERVE_PUBLIC_URL": "review.example"},
     r"serve.public_url must be an http:// or https:// URL"),
    ({"CLINIC_EVENTS_SERVE_SESSION_SECRET": "short"},
     r"serve.session_secret must be at least 32 characters"),
    ({"CLINIC_EVENTS_SERVE_USERS": '[{ name = "ana", password_hash = "hunter2", '
                                   'role = "viewer" }]'},
     r"serve.users\[0\].password_hash must be an argon2 hash .*never the password itself"),
    ({"CLINIC_EVENTS_SERVE_USERS": f'[{{ name = "ana", password_hash = "{HASH}", '
                                   'role = "admin" }]'},
     r"serve.users\[0\].role must be one of viewer, operator, got 'admin'"),
    ({"CLINIC_EVENTS_SERVE_USERS": '[{ name = "ana" }]'},
     r"serve.users\[0\] must be a table with exactly name, password_hash, role"),
    ({"CLINIC_EVENTS_SERVE_USERS": f'[{{ name = "a", password_hash = "{HASH}", '
                                   f'role = "viewer" }}, {{ name = "a", password_hash = '
                                   f'"{HASH}", role = "viewer" }}]'},
     r"serve.users\[1\]: user 'a' is listed twice"),
    ({"CLINIC_EVENTS_SERVE_HOSTNAME": "x"},
     r"unknown key CLINIC_EVENTS_SERVE_HOSTNAME; valid keys in \[serve\]: host, port"),
])
def test_bad_serve_settings_are_refused_with_the_key_named(env: dict[str, str],
                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env=env)
