"""Telling a refused login or TLS handshake from an unreachable broker, and naming it."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.cli.options import layout_exit_code
from consumer.errors import KafkaUnreachable
from consumer.kafka.access import (
    CLOSES_FOR_A_HINT,
    AccessWatch,
    KafkaAccessRefused,
    closed_when_up_hint,
    first_answer,
    refusal,
)

SCRAM = {"sasl.username": "clinic", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.password": "x"}
AUTH_LINE = ("FAIL [rdkafka#producer-1] [thrd:sasl_plaintext://127.0.0.1:9093/bootstrap]: "
             "sasl_plaintext://127.0.0.1:9093/bootstrap: SASL authentication error: "
             "Authentication failed during authentication due to invalid credentials with "
             "SASL mechanism SCRAM-SHA-512 (after 312ms in state AUTH_REQ)")
TLS_LINE = ("FAIL [rdkafka#consumer-1] [thrd:ssl://127.0.0.1:9093/bootstrap]: "
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL "
            "routines::certificate verify failed: broker certificate could not be verified, "
            "verify that ssl.ca.location is correctly configured or root CA certificates are "
            "installed (install ca-certificates package) (after 5ms in state SSL_HANDSHAKE)")
REFUSED = "Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"


def test_a_failed_scram_login_names_the_user_the_mechanism_and_the_broker() -> None:
    named = refusal(AUTH_LINE, SCRAM)
    assert named is not None
    assert named.startswith("authentication failed for user `clinic` (SCRAM-SHA-512) at "
                            "127.0.0.1:9093: Authentication failed during authentication")
    assert "AUTH_REQ" not in named


def test_an_untrusted_certificate_is_a_tls_failure_named_without_openssl_codes() -> None:
    named = refusal(TLS_LINE, {})
    assert named is not None
    assert named.startswith("TLS handshake at 127.0.0.1:9093 failed: certificate verify "
                            "failed: broker certificate could not be verified")
    assert "0A000086" not in named
    assert "ssl.ca.location" in named


def test_a_sasl_client_at_a_listener_without_sasl_is_refused_and_told_so() -> None:
    """librdkafka's wording for it is its own; unrecognised, the refusal looked like an
    unreachable broker (exit 4 after 30 s) while the client knew within a millisecond."""
    line = ("FAIL [rdkafka#producer-1] [thrd:sasl_plaintext://127.0.0.1:9092/bootstrap]: "
            "sasl_plaintext://127.0.0.1:9092/bootstrap: SASL SCRAM-SHA-512 mechanism "
            "handshake failed: Broker: Request not valid in current SASL state: broker's "
            "supported mechanisms:  (after 1ms in state AUTH_HANDSHAKE)")
    assert refusal(line, SCRAM) == (
        "the listener at 127.0.0.1:9092 offers no SASL login, so user `clinic` "
        "(SCRAM-SHA-512) cannot log in: a PLAINTEXT or SSL listener? (check "
        "bootstrap_servers and security.protocol in [kafka.client])")


def test_a_mechanism_the_listener_does_not_offer_is_a_refused_login() -> None:
    line = ("sasl_plaintext://127.0.0.1:9093/bootstrap: SASL SCRAM-SHA-256 mechanism "
            "handshake failed: Broker: Unsupported SASL mechanism: broker's supported "
            "mechanisms: SCRAM-SHA-512 (after 2ms in state AUTH_HANDSHAKE)")
    named = refusal(line, {**SCRAM, "sasl.mechanisms": "SCRAM-SHA-256"})
    assert named == (
        "authentication failed for user `clinic` (SCRAM-SHA-256) at 127.0.0.1:9093: SASL "
        "SCRAM-SHA-256 mechanism handshake failed: Broker: Unsupported SASL mechanism: "
        "broker's supported mechanisms: SCRAM-SHA-512 (check sasl.username, sasl.password "
        "and sasl.mechanisms in [kafka.client])")


@pytest.mark.parametrize("line", [
    REFUSED, "1/1 brokers are down", "Disconnected: connection closed by peer",
    "Failed to resolve 'kafka:9092': Name or service not known"])
def test_an_unreachable_broker_is_no_refusal(line: str) -> None:
    assert refusal(line, SCRAM) is None


def test_the_watch_passes_every_line_on_and_keeps_the_first_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "watch.test")
    watch = AccessWatch(logging.getLogger("watch.test"), SCRAM)
    watch.log(logging.ERROR, "%s", REFUSED)
    assert watch.refused is None
    watch.log(logging.ERROR, "%s", AUTH_LINE)
    watch.log(logging.ERROR, "%s", TLS_LINE)
    refused = _refused(watch)
    assert refused is not None
    assert refused.startswith("authentication failed")
    assert [r.getMessage() for r in caplog.records] == [REFUSED, AUTH_LINE, TLS_LINE]


def _refused(watch: AccessWatch) -> str | None:
    """``watch.refused`` read afresh (a call may have set it since the last assert)."""
    return watch.refused


def _no_answer(_timeout: float) -> None:
    raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))


def test_a_refusal_ends_the_first_request_at_the_next_slice() -> None:
    """The request is not waited out: the slice after the refusal raises, naming it."""
    watch = AccessWatch(logging.getLogger("watch.test"), SCRAM)
    slices: list[float] = []

    def call(timeout: float) -> None:
        slices.append(timeout)
        if len(slices) == 2:
            watch.log(logging.ERROR, "%s", AUTH_LINE)
        _no_answer(timeout)

    with pytest.raises(KafkaAccessRefused, match=r"authentication failed for user `clinic`"):
        first_answer(call, 30.0, watch)
    assert len(slices) == 2
    assert max(slices) <= 0.5


def test_without_a_refusal_the_request_is_asked_again_until_its_deadline() -> None:
    watch = AccessWatch(logging.getLogger("watch.test"), SCRAM)
    served: list[int] = []
    with pytest.raises(KafkaException):
        first_answer(_no_answer, 0.05, watch, serve=lambda: served.append(1))
    assert served


def test_other_errors_and_answers_pass_through() -> None:
    watch = AccessWatch(logging.getLogger("watch.test"), SCRAM)
    assert first_answer(lambda _t: "metadata", 1.0, watch) == "metadata"

    def refused(_timeout: float) -> None:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException):
        first_answer(refused, 30.0, watch)


def test_a_refusal_has_its_own_exit_code_and_is_still_a_kafka_failure() -> None:
    error = KafkaAccessRefused("Kafka refused us: authentication failed for user `clinic`")
    assert isinstance(error, KafkaUnreachable)
    assert layout_exit_code(error) == 5
    assert layout_exit_code(KafkaUnreachable("cannot reach Kafka")) == 4


CLOSED_WHEN_UP = ("FAIL [rdkafka#producer-4] [thrd:127.0.0.1:9093/bootstrap]: "
                  "127.0.0.1:9093/bootstrap: Disconnected: connection closed by peer: receive 0 "
                  "after POLLIN (after 3ms in state UP)")


def test_a_client_without_sasl_whose_connections_are_closed_when_up_is_given_a_hint() -> None:
    assert closed_when_up_hint(CLOSED_WHEN_UP, {}) == (
        "the broker at 127.0.0.1:9093 closed every connection as soon as it was made: a "
        "listener that needs SASL or TLS? Check bootstrap_servers and security.protocol in "
        "[kafka.client]")
    tls = closed_when_up_hint(CLOSED_WHEN_UP, {"security.protocol": "SSL"})
    assert tls is not None
    assert "a listener that needs SASL?" in tls


@pytest.mark.parametrize(("line", "config"), [
    # a SASL client is told of its failed login instead
    (CLOSED_WHEN_UP, {**SCRAM, "security.protocol": "SASL_PLAINTEXT"}),
    ("127.0.0.1:9093/bootstrap: Disconnected: connection closed by peer: receive 0 after "
     "POLLIN (after 12ms in state APIVERSION_QUERY)", {}),
    (REFUSED, {}),
])
def test_other_closes_get_no_hint(line: str, config: dict[str, str]) -> None:
    assert closed_when_up_hint(line, config) is None


def test_the_last_slice_of_a_request_names_the_hint_once_closes_make_a_pattern() -> None:
    watch = AccessWatch(logging.getLogger("watch.test"), {})
    watch.log(logging.WARNING, "%s", CLOSED_WHEN_UP)
    with pytest.raises(KafkaException) as once:
        first_answer(_no_answer, 0.01, watch)
    assert "closed every connection" not in once.value.args[0].str()  # a restart, maybe
    for _ in range(CLOSES_FOR_A_HINT - 1):
        watch.log(logging.WARNING, "%s", CLOSED_WHEN_UP)
    with pytest.raises(KafkaException) as pattern:
        first_answer(_no_answer, 0.01, watch)
    error = pattern.value.args[0]
    assert error.code() == KafkaError._TRANSPORT
    assert error.str().startswith("Failed to get metadata (the broker at 127.0.0.1:9093 "
                                  "closed every connection as soon as it was made")
