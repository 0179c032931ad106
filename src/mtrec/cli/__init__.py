"""The ``mtrec`` command: parse flags, call the library, render. No logic lives here.

One file per command group; :mod:`mtrec.cli.program` holds the application and its entry
point, :mod:`mtrec.cli.options` the flags several commands share. The commands are
registered here, in the order ``mtrec --help`` lists them.
"""

from mtrec.cli.compare import compare_cmd, sweep_cmd
from mtrec.cli.data import data_fetch, data_synth
from mtrec.cli.program import app, console, data_app, main
from mtrec.cli.saved import evaluate_cmd, parse_history, recommend_cmd, similar_cmd
from mtrec.cli.serve import serve_cmd
from mtrec.cli.train import train_cmd

app.command("compare")(compare_cmd)
app.command("sweep")(sweep_cmd)
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("recommend")(recommend_cmd)
app.command("similar")(similar_cmd)
app.command("serve")(serve_cmd)
data_app.command("fetch")(data_fetch)
data_app.command("synth")(data_synth)

__all__ = ["app", "console", "main", "parse_history"]
