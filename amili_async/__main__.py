"""`python -m amili_async <command>`: the `amili` command (try `python -m amili_async demo`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
