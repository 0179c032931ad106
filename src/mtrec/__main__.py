from mtrec.cli import main

main()
