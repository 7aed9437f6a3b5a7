"""One job run, in its own process: `python -m lakenet.jobs.child SPEC.json`. It calls the lakenet.api function
the job names, writes the result's figures as JSON next to the spec and exits with the command's status (see
`lakenet.errors.ExitCode`), so a crash here can never take the scheduler down."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from lakenet.errors import ExitCode, LakenetError

__all__ = ["exit_code_for", "figures", "main"]


def exit_code_for(err: BaseException) -> ExitCode:
    """The exit status an exception ends a command with."""
    if isinstance(err, LakenetError):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    names = {c.__name__ for c in type(err).__mro__}
    # storage, network, database and cluster failures: the work may succeed when retried later
    if isinstance(err, OSError | TimeoutError) or names & {"OperationalError", "Py4JError", "MlflowException"}:
        return ExitCode.INFRASTRUCTURE
    return ExitCode.BUG


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):  # a summary (a Profile) as its JSON file has it
            return _plain(to_dict())
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def figures(command: str, result: Any) -> dict[str, Any]:
    """The history's columns from a command's result: rows, table versions, model, drift and promotion verdicts,
    the MLflow run and the report to link to."""
    r = _plain(result) if result is not None else {}
    out: dict[str, Any] = {}
    if command in ("predict", "featurize", "explain"):
        out["rows"] = r.get("rows")
        since, now = r.get("since_version"), r.get("input_version")
        out["versions"] = f"{since}→{now}" if since is not None else (str(now) if now is not None else None)
        out["model"] = str(r.get("model")) + (f" v{r['model_version']}" if r.get("model_version") else "")
    elif command == "ingest":
        out["rows"], out["versions"] = r.get("rows_written"), str(r.get("version"))
    elif command == "drift":
        out["drift"], out["report"] = r.get("verdict"), r.get("html")
        out["versions"] = str((r.get("current") or {}).get("to_version"))
    elif command == "update":
        old, new = r.get("table_versions") or (None, None)
        out["versions"], out["drift"], out["report"] = f"{old}→{new}", r.get("drift"), r.get("report")
        out["model"] = f"{r.get('name')} v{r.get('version')}" if r.get("version") else None
        if r.get("version") is not None:  # else "up to date": nothing new to learn from, nothing to gate
            out["promotion"], out["mlflow_run"] = str(r.get("verdict")), r.get("run_id")
    elif command in ("train", "tune"):
        fit = r.get("fit") if command == "tune" else r
        if fit:
            out["model"], out["mlflow_run"] = f"{fit.get('name')} v{fit.get('version')}", fit.get("run_id")
            out["report"] = (fit.get("reports") or {}).get("evaluation")
    elif command == "evaluate":
        out["report"] = (r.get("reports") or {}).get("evaluation")
    elif command == "profile":
        out["report"] = r.get("html_path")
    return {"figures": {k: v for k, v in out.items() if v is not None}, "result": r}


def _status(command: str, result: Any) -> ExitCode:
    if command == "drift" and getattr(result, "verdict", None) == "drift":
        return ExitCode.DRIFT
    if command == "update" and getattr(result, "version", None) is not None and not result.promoted:
        return ExitCode.NOT_PROMOTED
    return ExitCode.OK


def run(spec: dict[str, Any]) -> tuple[ExitCode, dict[str, Any]]:
    from lakenet import api
    from lakenet.jobs.config import COMMANDS

    command, args = spec["command"], dict(spec["args"])
    fn = getattr(api, COMMANDS[command])
    accepts = inspect.signature(fn).parameters
    if "workdir" in accepts:
        args.setdefault("workdir", spec["workdir"])
    if "progress" in accepts:
        args.setdefault("progress", True)  # one line per epoch in the run's log
    try:
        result = fn(**args)
    except BaseException as err:
        code = exit_code_for(err)
        if code in (ExitCode.BUG, ExitCode.INFRASTRUCTURE):
            traceback.print_exc()
        message = str(err).strip() or type(err).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        return code, {"figures": {}, "error": message}
    return _status(command, result), figures(command, result)


def _die_with_parent(parent: int | None) -> None:
    """A run dies with the process watching it (a killed scheduler included): no run goes on unwatched, and the
    next scheduler marks it failed and runs the job again; the commands' outputs are exactly-once either way."""
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(int(ExitCode.INTERRUPTED))


def main(argv: list[str] | None = None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    _die_with_parent(spec.get("parent_pid"))
    code, out = run(spec)
    tmp = Path(spec["result"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=str))
    tmp.replace(spec["result"])
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
