"""Errors a user can act on: every problem names the file, says what is wrong and what to do.

Validation collects :class:`Problem` records for the whole source tree before anything is written, then raises
one :class:`ValidationFailed` carrying all of them, so a user fixes everything in one pass instead of one error
per run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class PrepError(Exception):
    """Bad input or a damaged prepared directory; the message is written for the user (no traceback needed)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the source: ``path`` (file or folder), ``problem`` (what), ``action`` (what to do).

    ``scope`` says what ``--skip-invalid`` drops because of it: ``"slice"`` (one image/mask pair), ``"patient"``
    (a whole patient folder), ``"csv"`` (a row or the whole of data.csv; images are never dropped for it) or
    ``"file"`` (only the named file or link, which belongs to no slice).
    ``patient`` and ``slice`` locate it; ``slice`` is None where no slice number is known.
    """

    path: str
    problem: str
    action: str
    scope: str = "slice"
    patient: str | None = None
    slice: int | None = None

    def to_excluded(self) -> dict:
        """The manifest ``excluded`` entry for this problem."""
        return {"path": self.path, "reason": self.problem}

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem} -> {self.action}"


class ValidationFailed(PrepError):
    """The source has problems and ``--skip-invalid`` was not given: nothing was written."""

    def __init__(self, problems: list[Problem], source: str, out: str, limit: int = 50):
        self.problems = list(problems)
        lines = [f"{len(self.problems)} problem(s) in {source}; nothing was written to {out}:"]
        lines += [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        lines.append(
            "Fix the files listed (or remove them), or rerun with --skip-invalid to leave them out "
            "(each is then recorded with its reason in manifest.json 'excluded')."
        )
        super().__init__("\n".join(lines))


class DamagedShards(PrepError):
    """``--verify`` found shards whose bytes no longer match the manifest or whose data fails its checksum."""

    def __init__(self, out: str, damaged: list[tuple[str, str]]):
        self.damaged = list(damaged)
        lines = [f"{len(self.damaged)} damaged shard(s) in {out}:"]
        lines += [f"  {name}: {why}" for name, why in self.damaged]
        lines.append("Rerun `orch prep SOURCE OUT` with the same SOURCE: it rebuilds exactly the damaged shards.")
        super().__init__("\n".join(lines))
