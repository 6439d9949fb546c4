"""The command-line edge: typer commands (commands.py) that parse options, call one function
and leave with the exit code exits.py decides; setup.py prepares the process, render.py,
live.py and tables.py print. This package imports nothing itself."""
