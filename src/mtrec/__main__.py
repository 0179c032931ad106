from mtrec.cli import console

console()
