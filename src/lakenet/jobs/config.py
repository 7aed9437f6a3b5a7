"""The jobs file (`jobs.yaml`): which lakenet commands run, when, and whom to tell. Validated once into frozen
models with the same strictness and messages as the main config; each job's `args` are checked against the
keyword arguments of the `lakenet.api` function it runs."""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from lakenet.errors import ConfigError

__all__ = [
    "COMMANDS",
    "Alerts",
    "CronTrigger",
    "EmailAlert",
    "EveryTrigger",
    "FolderTrigger",
    "Job",
    "JobsFile",
    "SlowerThan",
    "SmtpConfig",
    "TableUpdateTrigger",
    "WebhookAlert",
    "crontab",
    "load_jobs",
    "parse_duration",
]

# `run:` -> the lakenet.api function it calls (the CLI command of the same name calls it too)
COMMANDS = {
    "ingest": "ingest",
    "train": "fit",
    "tune": "tune",
    "evaluate": "evaluate",
    "predict": "predict",
    "featurize": "featurize",
    "explain": "explain",
    "drift": "drift",
    "update": "update",
    "profile": "profile",
}
# Arguments a job cannot pass: live Python objects, or what the runner decides.
_NOT_ARGS = {"spark", "callbacks", "background", "progress", "quiet"}
# Arguments that name files or tables: relative paths are relative to the jobs file, like data.table in a config.
_PATH_ARGS = {"config", "table", "out", "source", "workdir"}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*([smhdw]))+\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `"45s"`, `"30m"`, `"6h"`, `"1d"`, `"1h30m"`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 6h or 1d")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    if isinstance(value, str) and _DURATION.match(value):
        total = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", value))
        if total > 0:
            return total
    raise ValueError("expected a duration such as 30s, 5m, 6h, 1d or 1h30m")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_days(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday; names; ranges; steps) as APScheduler day names:
    APScheduler 3 numbers days from Monday = 0, so `from_crontab("0 3 * * 1")` would fire on Tuesdays."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        body, _, step = item.partition("/")
        if body == "*":
            lo, hi = 0, 6
        else:
            a, _, b = body.partition("-")
            lo = _DAYS.index(a[:3]) if a[:3] in _DAYS else int(a)
            hi = (_DAYS.index(b[:3]) if b[:3] in _DAYS else int(b)) if b else (6 if step else lo)
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi):
            raise ValueError(f"day of week {item!r} is outside 0-7 (0 and 7 are Sunday)")
        days.update(d % 7 for d in range(lo, hi + 1, int(step) if step else 1))
    return ",".join(_DAYS[d] for d in sorted(days))


def crontab(expr: str, timezone: str = "UTC") -> Any:
    """An APScheduler trigger for a standard five-field crontab expression."""
    from apscheduler.triggers.cron import CronTrigger as Cron

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, dow = fields
    return Cron(minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_days(dow), timezone=timezone)


class CronTrigger(_Strict):
    """Run on a crontab schedule (five fields: minute hour day-of-month month day-of-week)."""

    cron: str = Field(description='A crontab expression, e.g. "0 3 * * 1" (Mondays at 03:00).')
    timezone: str = Field("UTC", description="The time zone the expression is read in (an IANA name).")

    @model_validator(mode="after")
    def _valid(self) -> CronTrigger:
        try:
            crontab(self.cron, self.timezone)
        except (ValueError, KeyError, LookupError) as err:
            raise ValueError(
                f"{self.cron!r} is not a valid cron expression ({err}); use five fields, minute hour "
                'day-of-month month day-of-week, e.g. "0 3 * * 1" for Mondays at 03:00 or "*/15 * * * *" for every '
                "15 minutes"
            ) from None
        return self


class EveryTrigger(_Strict):
    """Run at a fixed interval from when the scheduler starts."""

    every: Duration = Field(description="The interval: 30s, 15m, 6h, 1d …")


class TableUpdateTrigger(_Strict):
    """Run when a Delta table gets a new version (polled: reading the table's latest version is cheap)."""

    table_update: str = Field(description="The Delta table to watch (a path relative to the jobs file, or a URI).")
    min_new_rows: int = Field(1, ge=0, description="Fire only once the new versions added at least this many rows.")
    poll: Duration = Field(30.0, description="How often to look at the table's version.")


class FolderTrigger(_Strict):
    """Ingest new files of a folder: each file not seen before runs the job (`run: ingest`) with it as `source`."""

    folder: str = Field(description="The folder to watch (relative to the jobs file).")
    pattern: str = Field("*", description="Which files: a glob such as *.csv.")
    poll: Duration = Field(30.0, description="How often to list the folder.")


_TRIGGER_KEYS: dict[str, type[_Strict]] = {
    "cron": CronTrigger,
    "every": EveryTrigger,
    "table_update": TableUpdateTrigger,
    "folder": FolderTrigger,
}


def _pick_trigger(value: Any) -> Any:
    """A trigger is named by its one defining key; anything else is refused here with the valid choices."""
    if isinstance(value, BaseModel) or value is None:
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a trigger is a mapping such as {{cron: '0 3 * * 1'}}, found {value!r}")
    kinds = [k for k in _TRIGGER_KEYS if k in value]
    if len(kinds) != 1:
        raise ValueError(
            "a trigger needs exactly one of cron, every, table_update or folder "
            f"(found {', '.join(map(str, value)) or 'nothing'})"
        )
    return value


def _trigger_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return next(f"{k}_trigger" for k in _TRIGGER_KEYS if k in type(value).model_fields)
    found = next((k for k in _TRIGGER_KEYS if k in value), None) if isinstance(value, dict) else None
    return f"{found}_trigger" if found else None


# pydantic puts the chosen kind in error paths: explain() leaves it out
TRIGGER_TAGS = frozenset(f"{k}_trigger" for k in _TRIGGER_KEYS)
Trigger = Annotated[
    Annotated[CronTrigger, Tag("cron_trigger")]
    | Annotated[EveryTrigger, Tag("every_trigger")]
    | Annotated[TableUpdateTrigger, Tag("table_update_trigger")]
    | Annotated[FolderTrigger, Tag("folder_trigger")],
    Discriminator(_trigger_kind),
]


class Job(_Strict):
    """One lakenet command with its arguments, and what starts it."""

    run: Literal[tuple(COMMANDS)] = Field(description="The command: " + ", ".join(COMMANDS) + ".")  # type: ignore[valid-type]
    args: dict[str, Any] = Field(default_factory=dict, description="Its arguments, as the Python API names them.")
    trigger: Annotated[Trigger | None, BeforeValidator(_pick_trigger)] = Field(
        None, description="cron, every, table_update or folder; none: only `lakenet jobs run` starts it."
    )
    timeout: Duration | None = Field(None, description="Stop a run that takes longer (exit status 124).")
    grace: Duration = Field(
        3600.0,
        description="Runs missed while the scheduler was down are coalesced into one, if it comes back within this.",
    )

    @model_validator(mode="after")
    def _folder_ingests(self) -> Job:
        if isinstance(self.trigger, FolderTrigger) and self.run != "ingest":
            raise ValueError(f"a folder trigger ingests new files: it needs run: ingest, not run: {self.run}")
        return self


class SmtpConfig(_Strict):
    """The SMTP server; credentials come from the environment, never from this file."""

    host: str = Field("localhost", description="SMTP server host.")
    port: int = Field(25, ge=1, le=65535, description="SMTP server port (587 for STARTTLS, 465 for SSL).")
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS before logging in.")
    ssl: bool = Field(False, description="Connect over SSL from the start (port 465).")
    user_env: str | None = Field(None, description="Environment variable holding the login user (none: no login).")
    password_env: str = Field("LAKENET_SMTP_PASSWORD", description="Environment variable holding the password.")
    timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for the server.")
    ca_file: str | None = Field(
        None, description="A CA bundle to verify the server's certificate with (a private CA); default: the system's."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, value: Any) -> Any:
        if isinstance(value, dict) and ("password" in value or "user" in value):
            raise ValueError(
                "credentials never go in the jobs file: set user_env and password_env to the names of environment "
                "variables that hold them (e.g. user_env: LAKENET_SMTP_USER)"
            )
        return value


class EmailAlert(_Strict):
    to: list[str] = Field(min_length=1, description="Recipients.")
    sender: str = Field("lakenet@localhost", alias="from", description="The From address.")
    smtp: SmtpConfig = Field(default_factory=SmtpConfig, description="How to reach the SMTP server.")

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, populate_by_name=True)


class WebhookAlert(_Strict):
    url: str = Field(pattern=r"^https?://", description="Receives a JSON POST per alert.")
    timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for the receiver.")


class SlowerThan(_Strict):
    slower_than: Duration = Field(description="Alert (once) when a run is still going after this long.")


AlertOn = Literal["failure", "drift", "promoted", "not_promoted"] | SlowerThan


class Alerts(_Strict):
    email: EmailAlert | None = Field(None, description="E-mail over SMTP.")
    webhook: WebhookAlert | None = Field(None, description="A JSON webhook.")
    on: list[AlertOn] = Field(
        default_factory=lambda: list[AlertOn](["failure"]),
        description="When to alert: failure, drift, promoted, not_promoted, {slower_than: 30m}.",
    )
    retries: int = Field(3, ge=1, le=10, description="Delivery attempts per alert and channel.")

    def wants(self, event: str) -> bool:
        return event in self.on

    @property
    def slower_than(self) -> float | None:
        bounds = [o.slower_than for o in self.on if isinstance(o, SlowerThan)]
        return min(bounds) if bounds else None


class JobsFile(_Strict):
    """A jobs file: named jobs, where their history lives, and alerts."""

    jobs: dict[str, Job] = Field(description="Jobs by name.")
    alerts: Alerts | None = Field(None, description="Who is told about failures, drift and promotions.")
    store: str | None = Field(
        None,
        description="SQLAlchemy URL of the scheduler's store and run history (default: jobs.db next to mlflow.db).",
    )
    workdir: str | None = Field(None, description="The working directory the commands run in (default: this file's).")
    logs: str | None = Field(None, description="Folder of the runs' log files (default: <workdir>/.lakenet/jobs/logs).")
    shutdown_timeout: Duration = Field(300.0, description="On SIGTERM, how long a running job may take to finish.")

    @model_validator(mode="after")
    def _names(self) -> JobsFile:
        bad = [n for n in self.jobs if not re.fullmatch(r"[A-Za-z0-9_.-]+", n)]
        if bad:
            raise ValueError(f"job names may use letters, digits, _ . - only: {bad}")
        return self

    def job(self, name: str) -> Job:
        if name not in self.jobs:
            close = difflib.get_close_matches(name, list(self.jobs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"No job {name!r} in the jobs file{hint} (jobs: {', '.join(self.jobs)})")
        return self.jobs[name]


def _api_parameters(command: str) -> dict[str, inspect.Parameter]:
    from lakenet import api

    fn = getattr(api, COMMANDS[command])
    return {n: p for n, p in inspect.signature(fn).parameters.items() if n not in _NOT_ARGS}


def _check_args(name: str, job: Job, base: Path) -> dict[str, Any]:
    """`args` against the API function's parameters: unknown names with the nearest one, missing required ones,
    values of the wrong type. Relative paths are made absolute against the jobs file's folder."""
    from lakenet import api

    params = _api_parameters(job.run)
    where = f"jobs.{name}.args"
    problems = []
    for key in job.args:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"  {where}.{key}: unknown argument of {job.run}{hint} (valid: {', '.join(params)})")
    filled = {"source"} if isinstance(job.trigger, FolderTrigger) else set()
    for key, p in params.items():
        positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        if positional and p.default is p.empty and key not in job.args and key not in filled:
            problems.append(f"  {where}.{key}: required argument of {job.run} is missing")
    args = {}
    for key, value in job.args.items():
        if key not in params:
            continue
        try:
            ann = eval(params[key].annotation, vars(api)) if isinstance(params[key].annotation, str) else Any
            TypeAdapter(ann).validate_python(value)
        except ValidationError as err:
            problems.append(f"  {where}.{key}: {err.errors()[0]['msg']} (found {value!r})")
        except Exception:
            pass
        if key in _PATH_ARGS and isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
            value = str((base / value).resolve())
        args[key] = value
    if problems:
        raise ConfigError("Invalid jobs file:\n" + "\n".join(problems))
    return args


def _resolve(jobs: JobsFile, base: Path) -> JobsFile:
    """Paths relative to the jobs file made absolute; each job's args checked."""

    def absolute(p: str | None) -> str | None:
        if p is None or "://" in p or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    resolved = {}
    for name, job in jobs.jobs.items():
        t = job.trigger
        if isinstance(t, TableUpdateTrigger):
            t = t.model_copy(update={"table_update": absolute(t.table_update)})
        elif isinstance(t, FolderTrigger):
            t = t.model_copy(update={"folder": absolute(t.folder)})
        resolved[name] = job.model_copy(update={"args": _check_args(name, job, base), "trigger": t})
    return jobs.model_copy(
        update={"jobs": resolved, "workdir": absolute(jobs.workdir or "."), "logs": absolute(jobs.logs)}
    )


def load_jobs(path: str | Path) -> JobsFile:
    """Read and validate a jobs file; every error names the key and the fix, as for the main config."""
    from lakenet.config.loader import explain

    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"Jobs file {p} not found; write one (see `lakenet jobs --help` and the README's Jobs section)"
        )
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"Jobs file {p} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid jobs file {p}: expected a mapping with a jobs: section at the top level")
    alerts = raw.get("alerts")
    if isinstance(alerts, dict) and True in alerts:  # YAML 1.1 reads a bare `on:` key as the boolean true
        raw = {**raw, "alerts": {("on" if k is True else k): v for k, v in alerts.items()}}
    try:
        jobs = JobsFile.model_validate(raw)
    except ValidationError as err:
        raise explain(err, str(p), root=JobsFile, what="jobs file", tags=TRIGGER_TAGS) from None
    return _resolve(jobs, p.resolve().parent)
