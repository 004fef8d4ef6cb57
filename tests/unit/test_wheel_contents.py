"""The built wheel holds every package, schema, template, data file and type marker of the
source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("consumer", "retry_topics", "schemas")


def _wheel_names(tmp_path: Path) -> set[str]:
    """The file names in a wheel built from a fresh copy of the source.

    A copy, because setuptools reuses a ``build/`` folder left in the checkout, whose stale
    contents would hide a package the configuration leaves out.
    """
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for top in TOP_LEVEL:
        shutil.copytree(ROOT / top, source / top,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("clinic_events-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_ships_every_package_schema_and_type_marker(tmp_path: Path) -> None:
    names = _wheel_names(tmp_path)
    expected = set()
    for top in TOP_LEVEL:
        for path in (ROOT / top).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in {".py", ".avsc", ".html", ".css", ".jsonl"} \
                    or path.name == "py.typed":
                expected.add(path.relative_to(ROOT).as_posix())
    assert "consumer/cli/main.py" in expected  # the walk found the tree it checks
    assert any(name.startswith("consumer/web/templates/") for name in expected)
    missing = sorted(expected - names)
    assert not missing, f"left out of the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert entry_points


def test_the_wheel_carries_no_tests_or_tooling(tmp_path: Path) -> None:
    names = _wheel_names(tmp_path)
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/"))]
