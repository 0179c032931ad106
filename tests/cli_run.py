"""Run the ``mtrec`` command in process, as CI would from a shell: its exit code."""

from __future__ import annotations

from mtrec.cli import main


def run_cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
