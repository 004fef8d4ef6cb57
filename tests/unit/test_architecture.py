"""The layout's rules, read from the source: which layer may import which.

Inner layers first; a module may import its own subpackage and any layer below its own,
never one above. ``retry_topics`` is the pure retry model and imports nothing of the
application; the broker client is imported in ``consumer.kafka`` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS: tuple[tuple[str, ...], ...] = (
    ("consumer.errors",),
    ("consumer.config", "consumer.events", "consumer.observability"),
    ("consumer.dedup", "consumer.delivery"),
    ("consumer.pipeline", "consumer.ops"),
    ("consumer.kafka", "consumer.notify"),
    ("consumer.web",),
    ("consumer.dev",),
    ("consumer.cli",),
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
BROKER_CLIENT = "confluent_kafka"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _package_of(module: str) -> str | None:
    """The layer package a ``consumer.*`` module belongs to (``consumer.kafka.x`` ->
    ``consumer.kafka``), or None for the top-level package itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0] == "consumer" else None


SOURCES = sorted((ROOT / "consumer").rglob("*.py")) + sorted((ROOT / "retry_topics").rglob("*.py"))


def test_every_application_module_belongs_to_a_layer() -> None:
    strays = [_module_name(p) for p in SOURCES
              if p.parts[-2] != "consumer" or p.name not in {"__init__.py", "__main__.py"}
              if _module_name(p).startswith("consumer.")
              and _package_of(_module_name(p)) not in RANK]
    assert not strays, f"modules outside every layer: {strays}"


@pytest.mark.parametrize("path", [p for p in SOURCES if _module_name(p).startswith("consumer.")],
                         ids=_module_name)
def test_a_module_imports_only_its_own_layer_package_and_layers_below(path: Path) -> None:
    own = _package_of(_module_name(path))
    if own not in RANK:
        return  # consumer/__main__.py: the entry point, above everything
    upward = sorted(
        name for name in _imports(path)
        if (target := _package_of(name)) in RANK and target != own and RANK[target] >= RANK[own]
    )
    assert not upward, f"{_module_name(path)} ({own}) imports a layer at or above its own"


@pytest.mark.parametrize("path", SOURCES, ids=_module_name)
def test_only_the_kafka_package_imports_the_broker_client(path: Path) -> None:
    module = _module_name(path)
    client = [name for name in _imports(path) if name.split(".")[0] == BROKER_CLIENT]
    if module.startswith("consumer.kafka"):
        return
    assert not client, f"{module} imports {client}; only consumer.kafka may"


@pytest.mark.parametrize("path", [p for p in SOURCES if p.parts[-2] == "retry_topics"
                                  or "retry_topics" in p.relative_to(ROOT).parts],
                         ids=_module_name)
def test_the_retry_model_imports_nothing_of_the_application(path: Path) -> None:
    application = [name for name in _imports(path) if name.split(".")[0] == "consumer"]
    assert not application, f"{_module_name(path)} imports {application}"


def test_the_run_wiring_imports_no_operator_tool() -> None:
    """``run`` starts without the lag, DLQ or publish tools: their failures and costs stay
    theirs."""
    wiring = ROOT / "consumer" / "cli" / "wiring.py"
    tools = ("consumer.ops", "consumer.kafka.lag_probe", "consumer.kafka.dlq_io",
             "consumer.kafka.publishing", "consumer.cli.")
    imported = sorted(name for name in _imports(wiring) if name.startswith(tools))
    assert not imported, f"the run wiring imports {imported}"
