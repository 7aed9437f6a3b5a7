"""The layer order holds: imports point down, packages form no cycle, private names stay home. And the checker
itself catches what it is for, on small fake packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lakenet.tools.layers import PACKAGE_DIR, check, format_graph, format_violations


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return root


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lakenet.tools.layers", *args], capture_output=True, text=True, timeout=120
    )


def test_lakenet_respects_its_layers() -> None:
    report = check(PACKAGE_DIR)
    assert not report.violations, "\n" + format_violations(report, PACKAGE_DIR)
    assert not report.stale, f"PENDING entries that no longer occur (remove them): {report.stale}"


def test_the_command_passes_on_lakenet_and_prints_the_graph() -> None:
    res = _run()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "api" in res.stdout and "-> " in res.stdout


def test_a_planted_upward_edge_fails(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "lakenet",
        {
            "errors.py": "",
            "data/codecs.py": "def f():\n    from lakenet.models.net import Net  # lazy, still an edge\n    return Net",
            "models/net.py": "from lakenet.data import codecs\n\nNet = object\n",
        },
    )
    report = check(root)
    kinds = sorted(v.kind for v in report.violations)
    assert kinds == ["cycle", "upward"], format_violations(report, root)
    up = next(v for v in report.violations if v.kind == "upward")
    assert up.where[0].importer == "lakenet.data.codecs" and up.where[0].target == "lakenet.models.net"
    res = _run(str(root))
    assert res.returncode == 1
    assert "lakenet.data.codecs imports lakenet.models.net: data is below models" in res.stdout
    assert "^models 1" in format_graph(report)  # the graph marks the edge that points up


def test_a_planted_cycle_fails_also_between_peers_of_no_layer(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "lakenet",
        {"alpha/a.py": "from lakenet.beta import b\n", "beta/b.py": "from ..alpha import a  # relative\n"},
    )
    report = check(root)
    cycle = [v for v in report.violations if v.kind == "cycle"]
    assert len(cycle) == 1 and cycle[0].message == "import cycle between alpha, beta"
    assert cycle[0].paths == (["alpha", "beta", "alpha"],)
    assert {v.message for v in report.violations if v.kind == "unplaced"} == {
        "unit alpha is in no layer: declare it in LAYERS, with its reason",
        "unit beta is in no layer: declare it in LAYERS, with its reason",
    }
    assert _run(str(root)).returncode == 1


def test_type_only_imports_count_and_private_names_stay_home(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "lakenet",
        {
            "config/schema.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from lakenet.data.sources import Snapshot\n"
            ),
            "data/sources.py": "Snapshot = object\n_helper = 1\n",
            "data/split.py": "from lakenet.data.sources import _helper  # same unit: fine\n",
            "models/bundle.py": "from lakenet.data.sources import _helper\nimport lakenet.data._cache\n",
            "data/_cache.py": "",
        },
    )
    report = check(root)
    msgs = sorted(v.message for v in report.violations)
    assert msgs == [
        "lakenet.config.schema imports lakenet.data.sources (type-only): config is below data",
        "lakenet.models.bundle imports _helper from lakenet.data.sources, private to the unit data",
        "lakenet.models.bundle imports lakenet.data._cache, private to lakenet.data",
    ], format_violations(report, root)
    assert "(1t)" in format_graph(report)


def test_pending_violations_are_reported_and_go_stale(tmp_path: Path) -> None:
    root = _write(tmp_path / "lakenet", {"data/a.py": "import lakenet.models.b\n", "models/b.py": ""})
    report = check(root, pending={("lakenet.data.a", "lakenet.models.b"): "move it", ("lakenet.x", "lakenet.y"): "-"})
    assert not report.violations
    assert [v.kind for v in report.pending] == ["upward"]
    assert report.stale == [("lakenet.x", "lakenet.y")]


def test_no_function_in_src_is_over_80_lines_without_saying_why() -> None:
    """The house rule (issue 13): a function longer than 80 lines needs a `# long: <why>` comment on the line
    above its `def` (or its first decorator)."""
    import ast

    too_long = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            said = first >= 2 and lines[first - 2].strip().startswith("# long:")
            if length > 80 and not said:
                too_long.append(f"{path.relative_to(PACKAGE_DIR)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, "functions over 80 lines without a '# long:' reason:\n" + "\n".join(too_long)
