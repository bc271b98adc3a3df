"""`python -m executor`: the executor's command line."""

from __future__ import annotations

import typer

from executor.cli import main, register
from executor.login import login_app

app = typer.Typer(no_args_is_help=True)
app.add_typer(login_app, name="login")
register(app)

if __name__ == "__main__":
    main(app)
