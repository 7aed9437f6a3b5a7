"""Run the lakenet CLI in this process with a gate before its Delta writes, to put real processes at the same
moment (a race) or kill one there with a real signal.

    python -m tests.fault_harness GATE_DIR WAIT_FOR ACTION -- lakenet arguments...

GATE_DIR: a folder the cooperating processes share. When its rows are written and about to be committed (lakenet's
staged files about to move into the table, or delta-rs's table creation, raw commit or writer, whichever comes
first) this process drops a file in GATE_DIR, waits (at most 30 s) until WAIT_FOR processes have, then: ACTION
`go` carries on, `kill` sends itself SIGKILL (killed between writing its data and committing). `kill-at-commit`
gates only delta-rs's commit calls (after lakenet moved the files into the table). Only the first such moment of
the process is gated. `kill-after-register` instead SIGKILLs the process as it is about to point an alias at a
registered model version (a kill right after the version, created with its tags, appears).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _gate(gate: Path, wait_for: int, action: str) -> None:
    (gate / f"{os.getpid()}.arrived").touch()
    deadline = time.monotonic() + 30
    while len(list(gate.glob("*.arrived"))) < wait_for and time.monotonic() < deadline:
        time.sleep(0.005)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner: Any, name: str, before: Any) -> None:
    original = getattr(owner, name)
    state = {"done": False}

    def gated(*args: Any, **kwargs: Any) -> Any:
        if not state["done"]:
            state["done"] = True
            before()
        return original(*args, **kwargs)

    setattr(owner, name, gated)


def main() -> None:
    gate, wait_for, action = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    args = sys.argv[sys.argv.index("--") + 1 :]
    gate.mkdir(parents=True, exist_ok=True)
    if action == "kill-after-register":
        from mlflow.tracking import MlflowClient

        _wrap(MlflowClient, "set_registered_model_alias", lambda: os.kill(os.getpid(), signal.SIGKILL))
    else:
        import deltalake
        import deltalake.transaction

        hits = {"n": 0}

        def before() -> None:
            hits["n"] += 1
            if hits["n"] == 1:
                _gate(gate, wait_for, "kill" if action == "kill-at-commit" else action)

        if action != "kill-at-commit":
            try:
                from lakenet.data.delta_io import Staging

                _wrap(Staging, "publish", before)
            except ImportError:  # a lakenet without staged writes
                pass
        _wrap(deltalake.transaction, "create_table_with_add_actions", before)
        _wrap(deltalake.DeltaTable, "create_write_transaction", before)
        _wrap(deltalake, "write_deltalake", before)
    from lakenet.cli import main as cli

    cli(args)


if __name__ == "__main__":
    main()
