"""The local broker's tool checks and configuration, without starting Java."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.cli.main import main
from consumer.dev.local_kafka import LocalKafka, new_cluster_id, require_tools
from consumer.errors import MissingToolError


def _fake_java(folder: Path, version_line: str) -> None:
    script = folder / "java"
    script.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_missing_java_is_one_line_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match=r"Java 17 or newer .* 'apt-get install openjdk"):
        require_tools(need_maven=False)


def test_old_java_is_refused_with_the_version_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match="found 11"):
        require_tools(need_maven=False)


def test_missing_maven_is_reported_when_jars_must_be_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15')
    monkeypatch.setenv("PATH", str(tmp_path))
    assert require_tools(need_maven=False) == str(tmp_path / "java")
    with pytest.raises(MissingToolError, match=r"Maven .* 'apt-get install maven'"):
        require_tools(need_maven=True)


def test_cli_start_without_java_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CLINIC_EVENTS_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["kafka", "start", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "Java 17" in result.output


@pytest.mark.parametrize("port", ["99999", "-5"])
def test_cli_start_refuses_a_port_out_of_range_before_looking_for_java(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    """A usage error at once, not a Java stack trace seconds later."""
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["kafka", "start", "--state-dir", str(tmp_path / "s"),
                                       "--port", port])
    assert result.exit_code == 2
    assert f"{port} is not in the range 0<=x<=65535" in result.output


def test_status_of_a_broker_never_started_is_not_running(tmp_path: Path) -> None:
    status = LocalKafka(tmp_path / "state").status()
    assert (status.running, status.pid, status.bootstrap) == (False, None, None)


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "broker.pid").write_text("999999999")
    (state / "broker.port").write_text("9")
    assert not LocalKafka(state).status().running
    assert LocalKafka(state).stop() is False
    assert not (state / "broker.pid").exists()


def test_environment_state_dir_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINIC_EVENTS_STATE_DIR", str(tmp_path))
    assert LocalKafka().state_dir == (tmp_path / "kafka").resolve()
    assert os.fspath(LocalKafka().log_file).endswith("broker.log")


def test_cluster_id_never_starts_with_a_dash_the_storage_tool_would_read_as_an_option() -> None:
    draws = iter([b"\xf8" + bytes(15), b"\x01" * 16])  # the first encodes to "-A..."
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert len(new_cluster_id()) == 22
