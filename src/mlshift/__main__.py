"""``python -m mlshift``: the command line."""

from mlshift.cli import main

main()
