"""``orch report`` (the paper's tables beside ours, plots) and ``orch ui`` (the MLflow UI on a sweep's store).

``orch report`` joins two libraries that never import each other: ``orchestrator.tracking`` (``--sync`` uploads
what an outage left buffered; a sweep with no directory here is read back from MLflow) and ``orchestrator.report``.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from pathlib import Path

import click

from orchestrator.cli.common import user_errors

log = logging.getLogger(__name__)


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
@click.option("--against", default=None, metavar="FULL_SWEEP",
              help="For a sweep screened with --scheduler asha: a full-grid sweep of the same grid (directory or "
              "name); the screening section then says whether its winner survived.")
@user_errors
def report_cmd(sweep, out, storage, tracking_uri, sync, buffer_dir, no_plots, against):
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

    if sync:
        click.echo(_sync(sweep, storage, tracking_uri, buffer_dir))
    rep = make_report(sweep, out=out, storage=storage, plots=not no_plots,
                      load=functools.partial(_read_mlflow, tracking_uri), against=against)
    click.echo(f"results: {rep.source}\n")
    click.echo(rep.markdown)
    for key, path in rep.paths.items():
        click.echo(f"wrote {key}: {path}")


def _sync(sweep: str, storage: str | None, tracking_uri: str | None, buffer_dir: str | None) -> str:
    """Upload the records an MLflow outage left in ``buffer_dir`` (default ``<sweep dir>/mlflow-buffer``); the line
    saying what was sent and what still waits."""
    from orchestrator.report.build import find_sweep_dir
    from orchestrator.results_schema import BUFFER_DIRNAME
    from orchestrator.tracking.sync import sync_buffers

    bdir = Path(buffer_dir) if buffer_dir else (find_sweep_dir(sweep, storage) or Path(sweep)) / BUFFER_DIRNAME
    done = sync_buffers(bdir, tracking_uri=tracking_uri)
    if not (done.sent or done.waiting):
        log.info("nothing buffered in %s", bdir)
    waiting = f"; still buffered (store unreachable): {', '.join(done.waiting)}" if done.waiting else ""
    return f"synced buffered MLflow records of {len(done.sent)} trial(s){waiting}"


def _read_mlflow(tracking_uri: str | None, name: str):
    """``make_report``'s loader for a sweep with no directory here: its results and per-patient table read back
    from the MLflow store ``tracking_uri`` (default ``sqlite:///<current dir>/mlflow.db``)."""
    from orchestrator.report.build import SweepResults
    from orchestrator.tracking.readback import per_patient_frame, results_frame
    from orchestrator.tracking.store import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    return SweepResults(results_frame(uri, name), f"mlflow:{uri}#{name}", patients=per_patient_frame(uri, name))


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
