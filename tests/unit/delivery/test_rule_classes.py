"""[classification] rules must name exception classes as the classifier will see them."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.delivery.rule_classes import check_rule_classes
from consumer.errors import ConfigError
from retry_topics.classification import ExceptionRules


@pytest.mark.parametrize("name", [
    "builtins.TimeoutError", "builtins.ConnectionError", "json.decoder.JSONDecodeError",
    "consumer.errors.ConfigError", "http.client.HTTPException",
])
def test_a_rule_naming_an_exception_class_by_its_path_is_accepted(name: str) -> None:
    check_rule_classes(ExceptionRules(transient=(name,), permanent=(name,)))


@pytest.mark.parametrize(("kind", "name", "problem"), [
    ("transient", "builtins.TimeoutErorr",
     "does not exist: 'builtins' has no attribute 'TimeoutErorr'"),
    ("permanent", "nosuchpackage.errors.Boom",
     "cannot be imported: no module named 'nosuchpackage'"),
    ("transient", "socket.timeout",
     "is the class 'builtins.TimeoutError', which the rule must name that way to match"),
    ("transient", "json.JSONDecodeError",
     "is the class 'json.decoder.JSONDecodeError', which the rule must name that way to match"),
    ("permanent", "json.dumps", "is a function, not an exception class"),
    ("permanent", "builtins.int", "is a type, not an exception class"),
])
def test_a_rule_that_could_never_match_stops_start_up_naming_the_key(
    kind: str, name: str, problem: str,
) -> None:
    rules = ExceptionRules(**{kind: (name,)})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        check_rule_classes(rules)
    assert str(caught.value).startswith(f"classification.{kind}: {name!r} {problem}; ")


def test_a_module_that_fails_to_import_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "broken_rules_module.py").write_text("raise RuntimeError('no config here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"importing 'broken_rules_module' failed: "
                                          r"RuntimeError: no config here"):
        check_rule_classes(ExceptionRules(permanent=("broken_rules_module.Boom",)))
