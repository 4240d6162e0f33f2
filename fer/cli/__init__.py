"""The `fer` command line; `main` is the console script."""

from fer.cli.main import app, main

__all__ = ["app", "main"]
