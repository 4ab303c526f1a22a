"""``orch report`` (the paper's tables beside ours, plots) and ``orch ui`` (the MLflow UI on a sweep's store)."""

from __future__ import annotations

import signal
import sys

import click

from orchestrator.cli.common import user_errors


@click.command("report")
@click.argument("sweep")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where tables and plots go. Default: the sweep directory (or ./reports/SWEEP from MLflow).")
@click.option("--storage", type=click.Path(file_okay=False), default=None,
              help="The sweep storage (default ./sweeps), to find SWEEP by name.")
@click.option("--tracking-uri", default=None,
              help="MLflow store (default sqlite:///./mlflow.db): read from it when SWEEP has no directory here; "
                   "with --sync, upload there.")
@click.option("--sync", is_flag=True, help="First upload the records an MLflow outage left buffered.")
@click.option("--buffer-dir", type=click.Path(file_okay=False), default=None,
              help="Buffered records to upload with --sync (default SWEEP_DIR/mlflow-buffer).")
@click.option("--no-plots", is_flag=True, help="Tables only.")
@user_errors
def report_cmd(sweep, out, storage, tracking_uri, sync, buffer_dir, no_plots):
    """Print SWEEP's results in the paper's layout (one table per learning rate) and write tables and plots.

    SWEEP is a sweep directory (holding results.csv) or a sweep name (looked up in --storage, else in MLflow).
    A sweep run with --folds K also gets its cross-validation table (per-patient Dice over every patient, 95% CI,
    beside the published figures of Buda et al. 2019 and human readers) from its cv_results.csv.

    \b
    Examples:
      orch report paper                               # ./sweeps/paper
      orch report paper --tracking-uri http://head:5000 --sync   # upload records an outage left buffered
    """
    from orchestrator.report import make_report

    rep = make_report(sweep, out=out, storage=storage, tracking_uri=tracking_uri, sync=sync, buffer_dir=buffer_dir,
                      plots=not no_plots)
    if sync:
        click.echo(f"synced buffered MLflow records of {len(rep.synced)} trial(s)"
                   + (f"; still buffered (store unreachable): {', '.join(rep.still_buffered)}"
                      if rep.still_buffered else ""))
    click.echo(f"results: {rep.source}\n")
    click.echo(rep.markdown)
    for key, path in rep.paths.items():
        click.echo(f"wrote {key}: {path}")


@click.command("ui")
@click.option("--workdir", type=click.Path(file_okay=False), default=".",
              help="Working directory whose mlflow.db the UI shows (default: here).")
@click.option("--tracking-uri", default=None, help="Another store (sqlite:///...); an http:// URI is just printed.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. The UI has no login: keep 127.0.0.1 and reach it from elsewhere with "
                   "ssh -L 5000:localhost:5000.")
@click.option("--port", type=int, default=5000, show_default=True,
              help="Port to listen on; when another program holds it, a free port is used and printed.")
@user_errors
def ui_cmd(workdir, tracking_uri, host, port):
    """Start the MLflow UI on a sweep's store, print its URL, and serve until Ctrl-C.

    \b
    Example:
      orch ui --workdir orch-demo       # the store `orch demo` wrote; then open the printed URL
    """
    from orchestrator.tracking.ui import start_ui

    server = start_ui(workdir=workdir, tracking_uri=tracking_uri, host=host, port=port)
    if isinstance(server, str):
        click.echo(f"MLflow UI: {server}")
        return
    # SIGTERM ends the command like Ctrl-C does: through `finally`, which stops the server it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if server.port != port:
        click.echo(f"port {port} on {host} is in use by another program: the MLflow UI listens on port "
                   f"{server.port} instead")
    click.echo(f"MLflow UI: {server.url}  (Ctrl-C to stop; server log {server.log_path})", nl=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        click.echo("stopping the MLflow UI")
    finally:
        server.stop()


COMMANDS = [report_cmd, ui_cmd]
