"""The ``orch`` command line: a click group whose commands are glue (parse, build a config, call one library
function, print). Each area registers its commands from its own module, listed in ``_COMMAND_MODULES``."""

from __future__ import annotations

import importlib
import logging

import click

from orchestrator import __version__

# Each module defines ``COMMANDS``: a list of click commands added to the group.
_COMMAND_MODULES = (
    "orchestrator.cli.data",
    "orchestrator.cli.train",
    "orchestrator.cli.sweep",
    "orchestrator.cli.report",
    "orchestrator.cli.predict",
    "orchestrator.cli.demo",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="orch")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """orch: prepare LGG brain-MRI data, train ResNet-UNets, sweep them on Ray, track everything in MLflow.

    \b
    Typical session:
      orch prep kaggle_3m/ prepared/      # TIFF + CSV -> validated, sharded HDF5
      orch sweep --grid paper             # 45 configurations on Ray (local or --address auto)
      orch report paper                   # the paper's tables beside ours, plots
      orch ui                             # review in the MLflow UI
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


for _name in _COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).COMMANDS:
        main.add_command(_cmd)
