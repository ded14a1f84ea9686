"""The `testbed` command. Thin: parse arguments, call the library (see main.py)."""
