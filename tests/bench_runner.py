"""Runs a benchmark script in --quick mode in a subprocess, as CI would, and returns its JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_quick_bench(
    name: str, out: Path, *, cache_dir: Path | None = None, cwd: Path = REPO, timeout: int = 120
) -> tuple[dict[str, Any], str]:
    """Run `python -m bench.<name> --quick`; assert it exits 0; return (the JSON it wrote, its stdout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", f"bench.{name}", "--quick", "--out", str(out)]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout
