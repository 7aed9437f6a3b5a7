"""The `lakenet` command: parses arguments, calls `lakenet.api`, prints. No logic lives here."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from lakenet.errors import LakenetError


class _Commands(TyperGroup):
    """The top-level commands, `serve` built only when it is the one run (see serve_command)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        return (name, serve_command(), rest) if name == "serve" else (name, cmd, rest)


_MASTER_HELP = "Spark master, e.g. local[2], or sc://host:15002 for Spark Connect (implies --engine spark)."

app = typer.Typer(
    cls=_Commands,
    name="lakenet",
    help="Deep learning on the tables you already have: ingest → profile → train → evaluate → register → predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Config utilities.", no_args_is_help=True)
app.add_typer(config_app, name="config")
# Not on a terminal (logs, pipes, CI), lines are not wrapped at 80 columns: a message stays one greppable line.
out = Console(soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())

ConfigArg = Annotated[Path, typer.Argument(help="The job's YAML config file.")]
RuntimeOpt = Annotated[
    str, typer.Option(help="torch, or onnx: run the model in ONNX Runtime (an exported .onnx file always is).")
]
TrustOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-module",
        help="A custom architecture (package.module:Class) the model may import; repeat for several. Built-in "
        "architectures need none. Also LAKENET_TRUSTED_MODULES=a.b:C,d.e:F.",
    ),
]
MODEL_HELP = "models:/name@alias, models:/name/N or a bundle dir."
WorkdirOpt = Annotated[
    Path | None,
    typer.Option("--workdir", help="Where mlflow.db, reports/ and .lakenet/ live (default: cwd)."),
]


@app.command()
def ingest(
    source: Annotated[Path, typer.Argument(help="Image folder (one sub-folder per class), CSV or Parquet.")],
    table: Annotated[str, typer.Option("--table", help="Delta table to write (created if missing).")],
    mode: Annotated[str, typer.Option(help="append (only rows with new keys) or overwrite.")] = "append",
    key: Annotated[
        str,
        typer.Option(
            help="Key column (made from file name, a fingerprint of its contents and row number when absent)."
        ),
    ] = "key",
    delimiter: Annotated[
        str | None, typer.Option(help="CSV field delimiter (default: detected among , ; tab |).")
    ] = None,
) -> None:
    """Write a source into a Delta table."""
    from lakenet import api

    if mode not in ("append", "overwrite"):
        raise LakenetError(f"--mode must be append or overwrite, not {mode!r}")
    res = api.ingest(source, table, mode=mode, key=key, delimiter=delimiter)  # type: ignore[arg-type]
    for skipped in res.files_skipped:
        err.print(f"[yellow]skipped[/] {skipped}", highlight=False)
    out.print(
        f"[green]ingested[/] {res.rows_written} rows ({res.kind}) into {res.table} version {res.version}"
        + (f"; {res.rows_skipped} already present" if res.rows_skipped else "")
    )
    if res.warning:
        err.print(f"[bold yellow]warning:[/] {res.warning}", highlight=False)


@app.command()
def init(
    table: Annotated[str, typer.Option("--table", help="Table to infer the config from.")],
    label: Annotated[
        str | None, typer.Option("--label", help="Column to predict (task anomaly: the known anomalies, optional).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task", help="classification, regression, anomaly or recommendation; default: inferred from the label."
        ),
    ] = None,
    user: Annotated[str | None, typer.Option(help="task recommendation: the user column (default: by name).")] = None,
    item: Annotated[str | None, typer.Option(help="task recommendation: the item column (default: by name).")] = None,
    name: Annotated[str | None, typer.Option(help="Registered model name (default: table name).")] = None,
    key: Annotated[
        str | None, typer.Option(help="Key column (default: a unique identifier column, else the 'key' column).")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the config to this file (data.table relative to it).")
    ] = None,
) -> None:
    """Print (or write) a short starting config inferred from the table: every decision is a comment."""
    from lakenet import api

    if task not in (None, "anomaly", "classification", "regression", "recommendation"):
        raise typer.BadParameter(f"--task must be classification, regression, anomaly or recommendation, not {task!r}")
    text = api.init_config(
        table, label=label, name=name, key=key, config_dir=out_file.parent if out_file else None, task=task,
        user=user, item=item,
    )  # fmt: skip
    if out_file is None:
        sys.stdout.write(text)
        return
    out_file.write_text(text, encoding="utf-8")
    out.print(f"[green]wrote[/] {out_file}")


@app.command()
def profile(config: ConfigArg, workdir: WorkdirOpt = None) -> None:
    """Profile the table: JSON + HTML report, bad rows quarantined."""
    from lakenet import api

    res = api.profile(config, workdir=workdir)
    p = res.profile
    out.print(f"rows {p.table.rows}, splits {p.splits}, bad rows {p.bad_rows.total}")
    for w in p.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    out.print(f"report: {res.html_path}\njson:   {res.json_path}")
    if res.quarantine:
        out.print(f"quarantine: {res.quarantine}")


@app.command()
def train(
    config: ConfigArg,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last complete checkpoint.")] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an interrupted run's checkpoint and start over.")
    ] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Train, evaluate on the test split, and register the model."""
    from lakenet import api

    res = api.fit(config, resume=resume, restart=restart, workdir=workdir)
    if res.already_registered:
        out.print(f"[yellow]already done[/]: this run finished and registered {res.name} version {res.version} "
                  f"(run {res.run_id}); nothing trained or registered")  # fmt: skip
        return
    out.print(f"[green]registered[/] {res.model_uri} → version {res.version} (run {res.run_id})")
    if res.alias_refused:
        err.print(f"[bold yellow]warning:[/] the alias was not moved: {res.alias_refused}", highlight=False)
    _print_metrics(res.metrics)
    if res.baseline:
        out.print(f"baseline: {res.baseline}")
    for name, path in res.reports.items():
        if str(path).endswith(".html"):
            out.print(f"{name} report: {path}")


@app.command()
def tune(
    config: ConfigArg,
    trials: Annotated[int | None, typer.Option(help="Override tune.trials (the study's total).")] = None,
    parallel: Annotated[int | None, typer.Option(help="Override tune.parallel (concurrent trials).")] = None,
    register: Annotated[bool, typer.Option(help="Evaluate and register the best configuration.")] = True,
    workdir: WorkdirOpt = None,
) -> None:
    """Search hyperparameters (the config's tune: section); running it again continues the study."""
    from lakenet import api

    res = api.tune(config, trials=trials, parallel=parallel, register=register, workdir=workdir)
    counts = ", ".join(f"{v} {k}" for k, v in res.counts.items() if v)
    out.print(f"study {res.study}: {counts}")
    out.print(f"best trial {res.best_trial}: {res.metric} {res.best_value:.4f}")
    for k, v in res.best_params.items():
        out.print(f"  {k:<32} {v}")
    out.print(f"best config: {res.best_config}\nreport: {res.report}")
    if res.fit is not None:
        out.print(f"[green]registered[/] {res.fit.model_uri} → version {res.fit.version}")
        _print_metrics({k: v for k, v in res.fit.metrics.items() if k.startswith("test_")})


@app.command()
def evaluate(
    config: ConfigArg,
    model: Annotated[str, typer.Option("--model", help="models:/name@alias, models:/name/N or a bundle dir.")],
    trust_module: TrustOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Evaluate a model on the config's test split."""
    from lakenet import api

    res = api.evaluate(config, model=model, trust_modules=trust_module or (), workdir=workdir)
    out.print(f"{res['rows']} test rows")
    _print_metrics(res["metrics"])
    out.print(f"report: {res['reports']['evaluation']}")


@app.command()
def predict(
    model: Annotated[str, typer.Option("--model", help="models:/name@alias, models:/name/N or a bundle dir.")],
    table: Annotated[str, typer.Option("--table", help="Table to score.")],
    out_table: Annotated[str, typer.Option("--out", help="Delta table to write predictions to.")],
    version: Annotated[int | None, typer.Option(help="Input Delta version (default: latest).")] = None,
    engine: Annotated[str | None, typer.Option(help="local or spark (default: --config's, else local).")] = None,
    master: Annotated[str | None, typer.Option(help=_MASTER_HELP)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Take the engine from this config.")] = None,
    workers: Annotated[int | None, typer.Option(help="Scoring processes / Spark partitions.")] = None,
    runtime: RuntimeOpt = "torch",
    trust_module: TrustOpt = None,
    keep: Annotated[
        str | None, typer.Option(help="Input columns to copy to the output, comma-separated (e.g. amount,country).")
    ] = None,
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental",
            help="Score only what the input's versions changed since the output last consumed it (one row per key).",
        ),
    ] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Score a table into a Delta table, exactly once."""
    from lakenet import api

    res = api.predict(
        model, table, out_table, version=version, engine=engine, master=master, config=config, workers=workers,
        runtime=runtime, trust_modules=trust_module or (), keep=(keep or "").split(","), incremental=incremental,
        workdir=workdir,
    )  # fmt: skip
    if incremental:
        if not res.committed:
            out.print(f"[yellow]up to date[/]: {res.table} holds this model's predictions for input version "
                      f"{res.input_version}; nothing written")  # fmt: skip
            return
        since = "the start" if res.since_version is None else f"version {res.since_version}"
        changed = f"{res.replaced} replaced, {res.deleted} deleted, {res.bad_rows} with an error"
        out.print(f"[green]scored[/] {res.rows} new or changed rows (input {since} → {res.input_version}) into "
                  f"{res.table}: {changed}")  # fmt: skip
        return
    if not res.committed:
        out.print(f"[yellow]already scored[/]: {res.table} has this model version's predictions for this input "
                  "version; nothing written")  # fmt: skip
        return
    if res.scored == "users":
        out.print(f"[green]recommended[/] items to {res.rows} users into {res.table} ({res.bad_rows} with an error)")
        return
    out.print(f"[green]scored[/] {res.rows} rows into {res.table} ({res.bad_rows} with an error)")


@app.command()
def update(
    config: ConfigArg,
    strategy: Annotated[
        str | None, typer.Option(help="warm_start, retrain or both (default: the config's update.strategy).")
    ] = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Train a challenger on the table's new rows and promote it only if it beats the champion."""
    from lakenet import api

    res = api.update(config, strategy=strategy, workdir=workdir)
    if res.version is None:
        out.print(f"[yellow]{res.verdict}[/]")
        return
    t = Table("model", "current test rows", "new rows", "old rows", box=None, title=f"test {res.metric}")
    for model, parts in res.scores.items():
        t.add_row(model, *("—" if parts[p] is None else f"{parts[p]:.4f}" for p in ("current", "new", "old")))
    out.print(t)
    colour = "green" if res.promoted else "yellow"
    out.print(f"[{colour}]{res.verdict}[/]; {res.strategy} challenger registered as {res.name} version "
              f"{res.version} (@{res.alias}); drift on the new rows: {res.drift}; report {res.report}")  # fmt: skip
    if not res.promoted:
        raise SystemExit(4)  # the gate refused: a scheduler can act on it


@app.command()
def drift(
    model: Annotated[str, typer.Option("--model", help="models:/name@alias, models:/name/N or a bundle dir.")],
    table: Annotated[
        str | None, typer.Option("--table", help="Table to compare (default: the one the model learned from).")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Its version (default: the latest).")] = None,
    since: Annotated[
        int | None, typer.Option(help="Compare only the rows added after this version (default: the model's).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Take the monitor: thresholds from here.")] = None,
    trust_module: TrustOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Compare new rows with the rows the model learned from. Exit status 3 when they drifted."""
    from lakenet import api

    res = api.drift(
        model, table=table, version=version, since=since, config=config, trust_modules=trust_module or (),
        workdir=workdir,
    )  # fmt: skip
    rows = Table("check", "kind", "statistic", "value", "drifted", box=None)
    for c in res.report.checks:
        rows.add_row(c.name, c.kind, c.statistic, f"{c.value:.4f}", "[red]yes[/]" if c.drifted else "no")
    out.print(rows)
    cur = res.current
    span = f"rows added after version {cur['from_version']}" if cur["from_version"] is not None else "every row"
    out.print(f"{res.verdict}: {cur['rows']} current rows ({span}, to version {cur['to_version']}) against "
              f"{res.reference['rows']} training rows; report {res.html}")  # fmt: skip
    if res.monitoring_table:
        out.print(f"checks appended to {res.monitoring_table}")
    if res.verdict == "drift":
        raise SystemExit(3)


@app.command()
def featurize(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="models:/name@alias or a bundle dir (embeds with that model), an .onnx image model, or a Hugging "
            "Face model (all-MiniLM-L6-v2, org/name, or a directory).",
        ),
    ],
    table: Annotated[str, typer.Option("--table", help="Table to embed.")],
    out_table: Annotated[str, typer.Option("--out", help="Delta table to write the embeddings to.")],
    column: Annotated[str | None, typer.Option(help="Column the network reads (ONNX and Hugging Face models).")] = None,
    key: Annotated[str, typer.Option(help="Key column.")] = "key",
    version: Annotated[int | None, typer.Option(help="Input Delta version (default: latest).")] = None,
    max_length: Annotated[int, typer.Option(help="Text models: tokens kept per row.")] = 128,
    engine: Annotated[str | None, typer.Option(help="local or spark (default: --config's, else local).")] = None,
    master: Annotated[str | None, typer.Option(help=_MASTER_HELP)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Take the engine from this config.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes / Spark partitions.")] = None,
    trust_module: TrustOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Write one embedding per row as a Delta table (exactly once), keeping the other columns."""
    from lakenet import api

    res = api.featurize(
        model, table, out_table, column=column, key=key, version=version, max_length=max_length, engine=engine,
        master=master, config=config, workers=workers, trust_modules=trust_module or (), workdir=workdir,
    )  # fmt: skip
    if not res.committed:
        out.print(f"[yellow]already featurized[/]: {res.table} has these embeddings for this input version")
        return
    out.print(f"[green]embedded[/] {res.rows} rows ({res.dim}-d) into {res.table} ({res.bad_rows} with an error)")


@app.command()
def explain(
    model: Annotated[str, typer.Option("--model", help=MODEL_HELP)],
    table: Annotated[str, typer.Option("--table", help="Table whose rows to explain.")],
    out_table: Annotated[str, typer.Option("--out", help="Delta table to write the attributions to.")],
    top_k: Annotated[int, typer.Option(help="Columns listed per row, largest |attribution| first.")] = 5,
    steps: Annotated[int, typer.Option(help="Integrated Gradients steps (more: smaller completeness gap).")] = 50,
    version: Annotated[int | None, typer.Option(help="Input Delta version (default: latest).")] = None,
    engine: Annotated[str | None, typer.Option(help="local or spark (default: --config's, else local).")] = None,
    master: Annotated[str | None, typer.Option(help=_MASTER_HELP)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Take the engine from this config.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes / Spark partitions.")] = None,
    trust_module: TrustOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Why the model said that: per-row attributions per input column, as a Delta table (exactly once)."""
    from lakenet import api

    res = api.explain(
        model, table, out_table, version=version, top_k=top_k, n_steps=steps, engine=engine, master=master,
        config=config, workers=workers, trust_modules=trust_module or (), workdir=workdir,
    )  # fmt: skip
    if not res.committed:
        out.print(f"[yellow]already explained[/]: {res.table} has these attributions for this input version")
        return
    out.print(f"[green]explained[/] {res.rows} rows into {res.table} ({res.bad_rows} with an error); columns: "
              + ", ".join(res.columns))  # fmt: skip


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="models:/name@alias, models:/name/N or a bundle dir.")],
    out_path: Annotated[Path, typer.Option("--out", help="File to write (.onnx or .safetensors).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or safetensors.")] = "onnx",
    tolerance: Annotated[float, typer.Option(help="Largest acceptable max abs difference to the model.")] = 1e-4,
    trust_module: TrustOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Export a model to ONNX or safetensors, checked against the model (parity) before it is written."""
    from lakenet import api

    res = api.export(
        model, out=out_path, format=fmt, tolerance=tolerance, trust_modules=trust_module or (), workdir=workdir
    )
    out.print(
        f"[green]exported[/] {res.path} ({res.format}); parity: max abs difference {res.max_abs_diff:.3g} on "
        f"{res.rows_checked} rows (tolerance {res.tolerance:g})"
    )


models_app = typer.Typer(help="List registered models; `promote` moves an alias.", add_completion=False)
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """List registered models, versions, aliases, metrics and lineage."""
    if ctx.invoked_subcommand is not None:
        return
    from lakenet import api

    listing = api.models(workdir=workdir)
    if as_json:
        sys.stdout.write(json.dumps(listing, indent=2, default=str) + "\n")
        return
    if not listing:
        out.print("no registered models yet: run `lakenet train <config>`")
        return
    t = Table("model", "version", "aliases", "metrics", "table@version", "from", "config")
    for m in listing:
        for v in m["versions"]:
            metrics = ", ".join(f"{k} {float(x):.4f}" for k, x in sorted(v["metrics"].items()))
            lin = v["lineage"]
            where = f"{lin.get('table', '?')}@{lin.get('table_version', '?')}"
            # an update's chain: its parent version, the strategy, and the gate's verdict
            origin = (
                f"v{lin['parent_version']} ({lin.get('update_strategy', '')}): {lin.get('update_verdict', '')}"
                if lin.get("parent_version")
                else "train"
            )
            t.add_row(
                m["name"], v["version"], ",".join(v["aliases"]), metrics, where, origin, lin.get("config_hash", "")
            )
    out.print(t)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The version the alias should point to.")],
    alias: Annotated[str, typer.Option("--alias", help="The alias to move.")] = "champion",
    workdir: WorkdirOpt = None,
) -> None:
    """Point NAME@ALIAS at VERSION (`lakenet serve --follow-alias` switches to it)."""
    from lakenet import api

    previous = api.promote(name, version, alias=alias, workdir=workdir)
    was = f" (was version {previous})" if previous is not None else ""
    out.print(f"[green]promoted[/] models:/{name}@{alias} → version {version}{was}")


# ---- serve: its options are the fields of ServeSettings ---------------------------------------------------------
# `--max-batch-size` is ServeSettings.max_batch_size, with the field's default and description: the settings are
# declared once. Older spellings keep working, hidden from the help: old option -> (setting, setting per unit).
SERVE_OLD_OPTIONS: dict[str, tuple[str, int]] = {
    "max_inflight": ("max_inflight_requests", 1),
    "timeout": ("request_timeout_s", 1),
    "drain_timeout": ("drain_timeout_s", 1),
    "body_timeout": ("body_timeout_s", 1),
    "poll_interval": ("poll_interval_s", 1),
    "threads": ("torch_threads", 1),
    "max_body_mb": ("max_body_bytes", 2**20),  # MiB
    "max_image_mpx": ("max_image_pixels", 2**20),  # 2**20 pixels
    "max_request_mpx": ("max_request_pixels", 2**20),
}
# Not an option: a token on the command line shows in `ps` and in the shell's history; --token-file reads one.
SERVE_NOT_OPTIONS = frozenset({"token"})


def _serve_parameters() -> list[inspect.Parameter]:
    """The serve command's parameters: the model and how to load it, then one option per ServeSettings field."""
    from lakenet.serving.settings import ServeSettings

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("model", kw, annotation=Annotated[str, typer.Argument(help=MODEL_HELP)]),
        inspect.Parameter("token_file", kw, default=None, annotation=Annotated[Path | None, typer.Option(
            "--token-file", help="File holding the bearer token clients must send (needed beyond loopback).")]),
        inspect.Parameter("runtime", kw, default="torch", annotation=RuntimeOpt),
        inspect.Parameter("trust_module", kw, default=None, annotation=TrustOpt),
        inspect.Parameter("workdir", kw, default=None, annotation=WorkdirOpt),
    ]  # fmt: skip
    for name, field in ServeSettings.model_fields.items():
        if name in SERVE_NOT_OPTIONS:
            continue
        kind = field.annotation
        help_ = field.description or ""
        if typing.get_origin(kind) is typing.Literal:  # e.g. log_level: the settings validate the choice
            help_ += " One of: " + ", ".join(map(str, typing.get_args(kind))) + "."
            kind = str
        option = typer.Option(f"--{name.replace('_', '-')}", help=help_, rich_help_panel="Settings")
        params.append(inspect.Parameter(name, kw, default=field.default, annotation=Annotated[kind, option]))
    for old, (setting, unit) in SERVE_OLD_OPTIONS.items():
        value: Any = float if unit != 1 else ServeSettings.model_fields[setting].annotation
        value = value if type(None) in typing.get_args(value) else value | None  # None: not given
        option = typer.Option(f"--{old.replace('_', '-')}", hidden=True, help=f"--{setting.replace('_', '-')}")
        params.append(inspect.Parameter(old, kw, default=None, annotation=Annotated[value, option]))
    names = [p.name for p in params]
    assert len(names) == len(set(names)), f"a serve option is declared twice: {names}"
    return params


def serve(**values: Any) -> None:
    """Serve a model (or an exported .onnx file) over HTTP: POST /v1/predict, /healthz, /readyz, /metrics, /docs."""
    from lakenet import api

    model, token_file, runtime, trust, workdir = (
        values.pop(k) for k in ("model", "token_file", "runtime", "trust_module", "workdir")
    )
    for old, (setting, unit) in SERVE_OLD_OPTIONS.items():
        given = values.pop(old)
        if given is not None:
            values[setting] = given if unit == 1 else int(given * unit)
    api.serve(
        model, token_file=token_file, runtime=runtime, trust_modules=tuple(trust or ()), workdir=workdir, **values
    )


@functools.cache
def serve_command() -> Any:
    """The serve command, with its ServeSettings options. Built when `lakenet serve` runs or shows its help, so
    that `lakenet --help` and the other commands do not import pydantic and the settings."""
    serve.__signature__ = inspect.Signature(_serve_parameters(), return_annotation=None)  # type: ignore[attr-defined]
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command("serve")(serve)
    return typer.main.get_command(single)


# What `lakenet --help` lists; `_Commands.resolve_command` runs serve_command() instead.
app.command("serve", help=serve.__doc__, add_help_option=False)(lambda: None)


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Working directory for the demo.")] = Path("demo_run"),
    workers: Annotated[int, typer.Option(help="Training processes.")] = 2,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 15,
) -> None:
    """Run the whole workflow on scikit-learn's handwritten digits."""
    from lakenet.demo import run_demo

    res = run_demo(directory, workers=workers, epochs=epochs, log=out.print)
    out.print("\n[bold green]demo complete[/]")
    out.print(f"test accuracy: {res.metrics.get('test_accuracy', float('nan')):.4f}")
    for name, path in res.reports.items():
        if str(path).endswith(".html"):
            out.print(f"{name} report: {path}")
    out.print(f"predictions: {res.predictions}")
    db = (directory / "mlflow.db").resolve()
    out.print(f"browse runs: mlflow ui --backend-store-uri sqlite:///{db}")


examples_app = typer.Typer(help="Datasets lakenet generates, and the experiments that use them.", no_args_is_help=True)
app.add_typer(examples_app, name="examples")


@examples_app.command("transfer")
def examples_transfer(
    directory: Annotated[Path, typer.Option("--dir", help="Working directory.")] = Path("transfer_run"),
    quick: Annotated[bool, typer.Option("--quick", help="Fewer rows and epochs (a smoke run).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the data and the training runs.")] = 0,
) -> None:
    """Rendered shapes: a source model fine-tuned on a few labelled rows of new shapes vs training from scratch."""
    from lakenet.examples import run_transfer_example

    res = run_transfer_example(directory, quick=quick, seed=seed, log=out.print)
    out.print(
        f"\n[bold]target test accuracy[/] ({res.target_train_rows} labelled training rows, {res.target_test_rows} "
        f"test rows): from scratch {res.scratch_test_accuracy:.3f}, fine-tuned {res.finetuned_test_accuracy:.3f}, "
        f"frozen backbone + new head {res.linear_probe_test_accuracy:.3f}"
    )


@examples_app.command("reviews")
def examples_reviews(
    path: Annotated[Path, typer.Option("--out", help="CSV file to write.")] = Path("reviews.csv"),
    rows: Annotated[int, typer.Option(help="Rows (half positive, half negative).")] = 600,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Write templated product reviews (key, product, review, sentiment) for text classification."""
    from lakenet.examples import write_reviews_csv

    out.print(f"wrote {write_reviews_csv(path, rows=rows, seed=seed)}")


@examples_app.command("transactions")
def examples_transactions(
    path: Annotated[Path, typer.Option("--out", help="CSV file to write.")] = Path("transactions.csv"),
    rows: Annotated[int, typer.Option(help="Rows.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    drift: Annotated[bool, typer.Option("--drift", help="A later batch with a shifted fraud pattern.")] = False,
    start_id: Annotated[int, typer.Option(help="First transaction number (a later batch continues).")] = 0,
) -> None:
    """Write card transactions: ids, customers, ISO timestamps, amounts and categories with missing values, a
    country, and a 2 % fraud label that depends on amount, hour of day and category."""
    from lakenet.examples import write_transactions_csv

    written = write_transactions_csv(path, rows=rows, seed=seed, drift=drift, start_id=start_id)
    out.print(f"wrote {rows} transactions to {written}")


@examples_app.command("sensors")
def examples_sensors(
    path: Annotated[Path, typer.Option("--out", help="CSV file to write.")] = Path("sensors.csv"),
    rows: Annotated[int, typer.Option(help="Rows.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Write machine sensor readings with about 2 % planted faults (overloads, mode mismatches, stuck sensors, hot
    spots, leaks), most inside every column's normal range; a `fault` label on the 30 % that were inspected."""
    from lakenet.examples.sensors import write_sensors_csv

    out.print(f"wrote {rows} readings to {write_sensors_csv(path, rows=rows, seed=seed)}")


@examples_app.command("interactions")
def examples_interactions(
    path: Annotated[Path, typer.Option("--out", help="CSV file to write.")] = Path("interactions.csv"),
    users: Annotated[int, typer.Option(help="Users.")] = 1000,
    items: Annotated[int, typer.Option(help="Items.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed (another seed: other users of the same items).")] = 0,
) -> None:
    """Write an interaction log (event, user, item, time, rating, genre, price, country, age) where users pick items
    by latent tastes: a recommender beats the popularity ranking on it."""
    from lakenet.examples.interactions import write_interactions_csv

    out.print(f"wrote {write_interactions_csv(path, users, items, seed=seed)}")


@examples_app.command("spoken-digits")
def examples_spoken_digits(
    directory: Annotated[Path, typer.Option("--dir", help="Folder to write (one sub-folder per digit).")],
    voices: Annotated[int, typer.Option(help="Voices (accent × variant), up to 84.")] = 24,
    speeds: Annotated[str, typer.Option(help="Speaking rates in words per minute, comma-separated.")] = "130,175",
    pitches: Annotated[str, typer.Option(help="Pitches (0-99), comma-separated.")] = "35,65",
    seed: Annotated[int, typer.Option(help="Seed of the voice order.")] = 0,
) -> None:
    """Synthesise the words zero to nine offline with espeak-ng (many voices, speeds and pitches) as WAV files,
    ready for `lakenet ingest`; group the split by voice with data.split.group_pattern (see the README)."""
    from lakenet.errors import DataError
    from lakenet.examples.spoken_digits import write_spoken_digits

    try:
        rates, tones = tuple(int(s) for s in speeds.split(",")), tuple(int(p) for p in pitches.split(","))
    except ValueError:
        raise typer.BadParameter("--speeds and --pitches take whole numbers separated by commas") from None
    try:
        root = write_spoken_digits(directory, voice_count=voices, speeds=rates, pitches=tones, seed=seed)
    except RuntimeError as err:
        raise DataError(str(err)) from None
    files = sum(1 for _ in root.rglob("*.wav"))
    out.print(f"wrote {files} WAV files to {root}")


@examples_app.command("shapes")
def examples_shapes(
    directory: Annotated[Path, typer.Option("--dir", help="Folder to write (one sub-folder per shape).")],
    target: Annotated[bool, typer.Option("--target", help="The target task's shapes instead of the source's.")] = False,
    per_class: Annotated[int, typer.Option(help="Images per shape.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Write rendered shapes as PNG files, ready for `lakenet ingest`."""
    from lakenet.examples import SOURCE_SHAPES, TARGET_SHAPES, write_shapes_folder

    shapes = TARGET_SHAPES if target else SOURCE_SHAPES
    root = write_shapes_folder(directory, shapes, per_class=per_class, seed=seed)
    out.print(f"wrote {len(shapes) * per_class} images to {root}")


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON Schema (for editors)."""
    from lakenet.config import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@config_app.command("validate")
def config_validate(config: ConfigArg) -> None:
    """Validate a config file and print it with every default filled in."""
    from lakenet.config import dump_config, load_config

    sys.stdout.write(dump_config(load_config(config)))


jobs_app = typer.Typer(help="Scheduled and data-triggered runs, their history, and alerts.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
JobsArg = Annotated[Path, typer.Argument(help="The jobs file (jobs.yaml).")]


@jobs_app.command("check")
def jobs_check(jobs_file: JobsArg) -> None:
    """Validate a jobs file and show when each scheduled job runs next."""
    from lakenet import jobs

    res = jobs.check(jobs_file)
    t = Table("job", "command", "trigger", "next runs (UTC)", box=None)
    for name, job in res.jobs.jobs.items():
        trigger = job.trigger.model_dump_json(exclude_defaults=True) if job.trigger else "by hand (jobs run)"
        upcoming = ", ".join(f"{d:%Y-%m-%d %H:%M}" for d in res.next_runs.get(name, []))
        t.add_row(name, job.run, trigger, upcoming or "when its data arrives" if job.trigger else "")
    out.print(t)
    out.print(f"[green]ok[/]: {len(res.jobs.jobs)} job(s); history and scheduler state in {res.store}")


@jobs_app.command("run")
def jobs_run(jobs_file: JobsArg, name: Annotated[str, typer.Argument(help="The job to run now.")]) -> None:
    """Run one job now (recorded like a scheduled run); exits with the command's status."""
    from lakenet import jobs

    run = jobs.run(jobs_file, name)
    colour = "green" if run.status == "ok" else "yellow" if run.status in ("drift", "not_promoted") else "red"
    figures = ", ".join(f"{k} {v}" for k, v in (("rows", run.rows), ("versions", run.versions), ("model", run.model),
                        ("drift", run.drift), ("promotion", run.promotion)) if v is not None)  # fmt: skip
    out.print(f"[{colour}]{run.status}[/] run {run.id} of {name} in {run.duration or 0:.1f} s"
              + (f": {figures}" if figures else "") + f"; log {run.log}")  # fmt: skip
    if run.error:
        err.print(f"error: {run.error}", highlight=False)
    if run.exit_code:
        raise SystemExit(run.exit_code if run.exit_code > 0 else 5)


@jobs_app.command("start")
def jobs_start(jobs_file: JobsArg) -> None:
    """The embedded scheduler, in the foreground, until SIGTERM or Ctrl-C (systemd and docker friendly)."""
    import logging

    from lakenet import jobs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    jobs.start(jobs_file)


@jobs_app.command("history")
def jobs_history(
    jobs_file: Annotated[Path | None, typer.Argument(help="The jobs file whose store to read.")] = None,
    job: Annotated[str | None, typer.Option(help="Only this job's runs.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    store: Annotated[str | None, typer.Option(help="A store URL (default: jobs.db next to mlflow.db).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Runs: job, trigger, start, duration, status, rows, versions, model, error."""
    import dataclasses
    import time

    from lakenet import jobs

    runs = jobs.history(path=jobs_file, store=store, workdir=workdir, job=job, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([dataclasses.asdict(r) for r in runs], indent=2, default=str) + "\n")
        return
    t = Table("run", "job", "trigger", "start", "s", "status", "rows", "versions", "model", "verdicts / error")
    for r in runs:
        verdicts = "; ".join(v for v in (r.drift and f"drift: {r.drift}", r.promotion, r.error) if v)
        t.add_row(str(r.id), r.job, r.trigger, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)),
                  f"{r.duration:.1f}" if r.duration is not None else "…", r.status, str(r.rows or ""),
                  r.versions or "", r.model or "", verdicts[:200])  # fmt: skip
    out.print(t if runs else "no runs yet")


def _print_metrics(metrics: dict[str, float]) -> None:
    for k, v in sorted(metrics.items()):
        out.print(f"  {k:<24} {v:.4f}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors print one clean message and exit with a stable status (`lakenet.errors.ExitCode`: 2 bad
    input, 3 drift, 4 not promoted, 5 infrastructure), never a traceback."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        rc = app(args=argv, standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C into an exit code when not in standalone mode
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc:
            raise SystemExit(rc)
    except LakenetError as e:
        from rich.text import Text

        err.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False)
        raise SystemExit(int(e.exit_code)) from None
    except KeyboardInterrupt:
        err.print(
            "interrupted; `lakenet train --resume` continues from the last checkpoint, and `lakenet tune` run "
            "again continues its study"
        )
        raise SystemExit(130) from None
    except Exception as e:
        # Usage errors: click's ClickException, or the same class in the copy of click that typer ≥ 0.20 vendors.
        if any(c.__name__ == "ClickException" for c in type(e).__mro__):
            e.show()  # type: ignore[attr-defined]
            raise SystemExit(e.exit_code) from None  # type: ignore[attr-defined]
        from lakenet.jobs.child import exit_code_for

        code = exit_code_for(e)
        if code != 5 or os.environ.get("LAKENET_DEBUG"):
            raise
        err.print(f"error: infrastructure failure: {type(e).__name__}: {e} (LAKENET_DEBUG=1 shows the traceback)",
                  highlight=False)  # fmt: skip
        raise SystemExit(int(code)) from None


if __name__ == "__main__":
    main()
