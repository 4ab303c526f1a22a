"""``python -m orchestrator.cli ...`` == ``orch ...`` (useful where the console script is not installed)."""

from orchestrator.cli import main

main()
