"""`import lakenet` and `lakenet --help` stay light: checked in fresh interpreters by which modules they loaded
(never by timing, which depends on the machine)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "pyspark", "mlflow")


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in {names!r} if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return res.stdout.splitlines()[-1].split()[1:]  # the help text comes first


def _cli(args: list[str]) -> str:
    return f"from lakenet.cli import app\ntry:\n    app({args!r})\nexcept SystemExit:\n    pass"


def test_import_lakenet_loads_no_torch_pyspark_or_mlflow() -> None:
    assert _loaded("import lakenet", HEAVY) == []


def test_import_lakenet_loads_no_data_stack_either() -> None:
    assert _loaded("import lakenet", ("pandas", "pyarrow", "deltalake", "numpy", "pydantic")) == []


def test_cli_help_loads_no_torch() -> None:
    # pydantic too: `serve`'s options (from ServeSettings) are built only when `lakenet serve` runs
    assert _loaded(_cli(["--help"]), (*HEAVY, "pandas", "pyarrow", "pydantic")) == []


def test_serve_help_loads_no_torch() -> None:
    assert _loaded(_cli(["serve", "--help"]), (*HEAVY, "fastapi", "uvicorn")) == []


def test_lazy_names_resolve_and_models_stays_the_function() -> None:
    code = (
        "import lakenet, lakenet.models.spec\n"  # importing the subpackage must not rebind lakenet.models
        "assert callable(lakenet.models) and lakenet.models.__module__ == 'lakenet.api', lakenet.models\n"
        "from lakenet import models\nassert models is lakenet.models\n"
        "assert lakenet.load_config.__module__.startswith('lakenet.config')\n"
        "assert set(lakenet.__all__) <= set(dir(lakenet))"
    )
    assert _loaded(code, ()) == []
