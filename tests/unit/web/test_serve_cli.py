"""``clinic-events serve``: refusing to start without users; ``serve hash-password``."""

from __future__ import annotations

from click.testing import CliRunner

from consumer.cli.main import main
from consumer.config.settings import ServeUser
from consumer.web.auth import authenticate


def test_serve_without_users_refuses_to_start_and_says_how_to_add_one() -> None:
    result = CliRunner().invoke(main, ["serve"], env={"CLINIC_EVENTS_CONFIG": "/dev/null"})
    assert result.exit_code == 2
    assert "nobody could sign in" in result.output
    assert "serve hash-password" in result.output


def test_hash_password_prints_an_argon2_hash_that_verifies() -> None:
    result = CliRunner().invoke(main, ["serve", "hash-password"], input="s3cret pass\n")
    assert result.exit_code == 0, result.output
    digest = result.output.splitlines()[0]
    assert digest.startswith("$argon2id$")
    user = ServeUser(name="ana", password_hash=digest, role="viewer")
    assert authenticate([user], "ana", "s3cret pass") == user
    assert authenticate([user], "ana", "s3cret pas") is None
