"""The typer application, its consoles, and the entry point that maps errors to exit codes."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import traceback
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from mtrec.errors import MtrecError, on_the_command_line
from mtrec.runtime import tune_allocator

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="mtrec: one model trained jointly to retrieve and to rank.",
    pretty_exceptions_enable=False,
)


data_app = typer.Typer(no_args_is_help=True, help="Fetch datasets; synthesise big ones.")


app.add_typer(data_app, name="data")


PIPED_WIDTH = 160
"""Columns of output that goes to no terminal (a file, a pager, a notebook's ``!mtrec``),
whatever ``COLUMNS`` says: rich's 80 wrapped a list's titles over three lines and cropped
the compare table's last column."""


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH)


err = _console(stderr=True)


out = _console()


invocation: dict[str, Any] = {"verbose": False, "argv": []}


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Tracebacks and debug logs.")
    ] = False,
) -> None:
    invocation["verbose"] = verbose
    # mtrec's own notes at INFO; other libraries' only from WARNING (matplotlib's "generated
    # new fontManager" leaked onto a first run), all of them with --verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )
    logging.getLogger("mtrec").setLevel(logging.DEBUG if verbose else logging.INFO)


def relaunch_with_torchrun(workers: int) -> None:
    """``--workers N``: the same command under ``torchrun --standalone --nproc-per-node N``
    (PyTorch's own launcher: rendezvous on a free local port, one process per worker)."""
    argv = list(invocation["argv"])
    for pos, arg in enumerate(argv):
        if arg == "--workers":
            del argv[pos : pos + 2]
            break
        if arg.startswith("--workers="):
            del argv[pos]
            break
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={workers}", "-m", "mtrec", *argv,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    raise typer.Exit(subprocess.run(cmd, env=env, check=False).returncode)


def console() -> None:
    """The ``mtrec`` program (console script and ``python -m mtrec``): :func:`main`, then an
    exit without the garbage collector's last passes over every object torch and the run
    made (module teardown collects cycles several times: 0.59-0.65 s of each
    ``mtrec compare`` here, 0.12-0.13 s after ``gc.freeze``). Objects still go by reference
    counting, files are closed and atexit handlers run; only cyclic garbage is left to the
    operating system. Not in :func:`main`, which tests call in process."""
    try:
        main()
    finally:
        gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """Run one command, map mtrec's errors to one line and an exit code."""
    tune_allocator()
    invocation["argv"] = list(sys.argv[1:] if argv is None else argv)
    try:
        with on_the_command_line():  # messages name flags, not Python parameters
            app(args=argv)  # standalone: usage errors print themselves and exit 2
    except MtrecError as exc:
        if invocation["verbose"]:
            traceback.print_exc()
        # escaped: a message may quote "[train]" or a user's text, not rich markup
        err.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
