"""``python -m mlshift.cli``: the command line."""

from mlshift.cli import main

main()
