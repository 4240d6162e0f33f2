"""`python -m fer` runs the CLI."""

from fer.cli import main

main()
