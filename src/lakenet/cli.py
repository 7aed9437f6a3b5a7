"""The `lakenet` command: parses arguments, calls `lakenet.api`, prints. No logic lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lakenet.errors import LakenetError

app = typer.Typer(
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
    label: Annotated[str, typer.Option("--label", help="Column to predict.")],
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

    text = api.init_config(table, label=label, name=name, key=key, config_dir=out_file.parent if out_file else None)
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
    out.print(f"rows {p['table']['rows']}, splits {p['splits']}, bad rows {p['bad_rows']['total']}")
    for w in p.get("warnings", []):
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
    master: Annotated[str | None, typer.Option(help="Spark master, e.g. local[2] (implies --engine spark).")] = None,
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
    master: Annotated[str | None, typer.Option(help="Spark master, e.g. local[2] (implies --engine spark).")] = None,
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


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="models:/name@alias, models:/name/N or a bundle dir.")],
    host: Annotated[str, typer.Option(help="Interface to bind; anything but loopback needs --token-file.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the bearer token clients must send.")
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="Most rows per micro-batch.")] = 32,
    max_batch_delay_ms: Annotated[
        float, typer.Option(help="How long a batch may wait for more rows (0: never; batches still form under load).")
    ] = 0.0,
    max_queue_rows: Annotated[int, typer.Option(help="Rows that may wait; beyond that: 503 + Retry-After.")] = 256,
    max_inflight: Annotated[
        int, typer.Option(help="Concurrent /v1/predict requests; more: 503 + Retry-After before reading them.")
    ] = 64,
    max_request_rows: Annotated[int, typer.Option(help="Most rows in one request.")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MiB (larger: 413).")] = 16.0,
    timeout: Annotated[float, typer.Option(help="Seconds a request may take before it gets 504.")] = 10.0,
    drain_timeout: Annotated[float, typer.Option(help="Seconds to finish in-flight requests on shutdown.")] = 30.0,
    body_timeout: Annotated[
        float,
        typer.Option(help="Seconds a client may take to send a request's head, then its body (slower: 408, closed)."),
    ] = 5.0,
    max_connections: Annotated[int, typer.Option(help="Open connections; one beyond them gets 503 and is closed.")] = (
        1000
    ),
    max_image_mpx: Annotated[
        float, typer.Option(help="Most pixels per image, in units of 2**20 (more: 422, read from the header).")
    ] = 16.0,
    max_request_mpx: Annotated[
        float, typer.Option(help="Most pixels of all images in one request, in units of 2**20 (more: 413).")
    ] = 64.0,
    follow_alias: Annotated[
        bool, typer.Option("--follow-alias", help="Switch to the version the alias points to when it moves.")
    ] = False,
    poll_interval: Annotated[float, typer.Option(help="Seconds between registry polls (--follow-alias).")] = 5.0,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu, cuda or cuda:N.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="Torch threads for the model (default: from the cores).")] = None,
    runtime: RuntimeOpt = "torch",
    trust_module: TrustOpt = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    workdir: WorkdirOpt = None,
) -> None:
    """Serve a model (or an exported .onnx file) over HTTP: POST /v1/predict, /healthz, /readyz, /metrics, /docs."""
    from lakenet import api

    api.serve(
        model, host=host, port=port, token_file=token_file, max_batch_size=max_batch_size,
        max_batch_delay_ms=max_batch_delay_ms, max_queue_rows=max_queue_rows, max_inflight_requests=max_inflight,
        max_request_rows=max_request_rows,
        max_body_bytes=int(max_body_mb * 2**20), request_timeout_s=timeout, drain_timeout_s=drain_timeout,
        body_timeout_s=body_timeout, max_connections=max_connections,
        max_image_pixels=int(max_image_mpx * 2**20), max_request_pixels=int(max_request_mpx * 2**20),
        follow_alias=follow_alias, poll_interval_s=poll_interval, device=device, torch_threads=threads,
        runtime=runtime, trust_modules=trust_module or (), access_log=access_log,
        workdir=workdir,
    )  # fmt: skip


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


def _print_metrics(metrics: dict[str, float]) -> None:
    for k, v in sorted(metrics.items()):
        out.print(f"  {k:<24} {v:.4f}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one clean message and exit 2, never a traceback."""
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
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print(
            "interrupted; `lakenet train --resume` continues from the last checkpoint, and `lakenet tune` run "
            "again continues its study"
        )
        raise SystemExit(130) from None
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            raise SystemExit(e.exit_code) from None
        raise


if __name__ == "__main__":
    main()
