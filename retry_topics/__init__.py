"""Pure model of tiered, non-blocking Kafka retry topics: policies, names, headers, routing.

Nothing in this package performs I/O; the consumer runtime executes the decisions made here.
"""

from retry_topics.classification import (
    Classification,
    ExceptionRules,
    classify_exception,
    classify_http_status,
    parse_classification,
    parse_retry_after_ms,
    qualified_name,
)
from retry_topics.clock import Clock, ManualClock, SystemClock
from retry_topics.due_gate import Ready, Wait, due_gate
from retry_topics.durations import format_duration, parse_duration_ms
from retry_topics.errors import HeaderError, PolicyError, RetryTopicsError
from retry_topics.headers import (
    DLQ_REASONS,
    DlqReason,
    FailureInfo,
    Provenance,
    RecordHeaders,
    decode_headers,
    encode_headers,
    replace_header,
)
from retry_topics.hops import next_hop_headers, replay_headers
from retry_topics.naming import (
    audit_topic_name,
    dlq_ledger_topic_name,
    dlq_topic_name,
    retry_topic_name,
    validate_topic_name,
)
from retry_topics.policy import BACKOFF_NAMES, BackoffName, InProcessRetry, RetryPolicy, RetryTier
from retry_topics.redaction import cap_utf8, redact_message
from retry_topics.routing import (
    DeadLetter,
    Decision,
    RetryInProcess,
    RetryTo,
    Step,
    dead_letter_undecodable,
    decide_after_failure,
    decide_next,
)

__all__ = [
    "BACKOFF_NAMES",
    "DLQ_REASONS",
    "BackoffName",
    "Classification",
    "Clock",
    "DeadLetter",
    "Decision",
    "DlqReason",
    "ExceptionRules",
    "FailureInfo",
    "HeaderError",
    "InProcessRetry",
    "ManualClock",
    "PolicyError",
    "Provenance",
    "Ready",
    "RecordHeaders",
    "RetryInProcess",
    "RetryPolicy",
    "RetryTier",
    "RetryTo",
    "RetryTopicsError",
    "Step",
    "SystemClock",
    "Wait",
    "audit_topic_name",
    "cap_utf8",
    "classify_exception",
    "classify_http_status",
    "dead_letter_undecodable",
    "decide_after_failure",
    "decide_next",
    "decode_headers",
    "dlq_ledger_topic_name",
    "dlq_topic_name",
    "due_gate",
    "encode_headers",
    "format_duration",
    "next_hop_headers",
    "parse_classification",
    "parse_duration_ms",
    "parse_retry_after_ms",
    "qualified_name",
    "redact_message",
    "replace_header",
    "replay_headers",
    "retry_topic_name",
    "validate_topic_name",
]
