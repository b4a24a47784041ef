"""Developer sessions: `nox -s tests lint typecheck bench docs`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "amili_async", "tests", "benchmarks", "examples")
    session.run("ruff", "format", "--check", "amili_async", "tests", "benchmarks", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".", "trio", "uvloop")
    session.run("python", "benchmarks/run.py", *session.posargs)
    session.run("python", "benchmarks/import_time.py")
    session.run("python", "benchmarks/memory.py")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")
