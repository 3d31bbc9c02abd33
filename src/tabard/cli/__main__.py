"""`python -m tabard.cli` runs the `tabard` command."""

from tabard.cli.main import app

app()
