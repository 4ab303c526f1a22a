"""The working directory's ``orch.toml``: what ``orch prep`` records so later commands need fewer flags.

Format (written by ``record_prepared``)::

    [data]
    prepared = "/abs/path/to/prepared"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

FILENAME = "orch.toml"


def _path(workdir: str | os.PathLike | None) -> Path:
    return Path(workdir or os.getcwd()) / FILENAME


def read(workdir: str | os.PathLike | None = None) -> dict:
    """The parsed ``orch.toml`` of ``workdir`` (default: the current directory), or ``{}`` if there is none."""
    p = _path(workdir)
    if not p.exists():
        return {}
    with open(p, "rb") as f:
        return tomllib.load(f)


def record_prepared(prepared: str | os.PathLike, workdir: str | os.PathLike | None = None) -> Path:
    """Record the prepared-data directory in ``orch.toml`` (atomically; other sections are kept)."""
    cfg = read(workdir)
    cfg.setdefault("data", {})["prepared"] = str(Path(prepared).resolve())
    p = _path(workdir)
    lines: list[str] = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    tmp = p.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, p)
    return p


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def prepared_dir(explicit: str | os.PathLike | None, workdir: str | os.PathLike | None = None) -> Path:
    """Resolve the prepared-data directory: ``explicit`` if given, else ``orch.toml``'s, else a clear error."""
    if explicit:
        return Path(explicit)
    rec = read(workdir).get("data", {}).get("prepared")
    if rec:
        return Path(rec)
    raise FileNotFoundError(
        f"no prepared data given and no {FILENAME} in {Path(workdir or os.getcwd()).resolve()}: "
        "pass --data PREPARED_DIR, or run `orch prep SOURCE OUT` here first (it records OUT in orch.toml)"
    )
