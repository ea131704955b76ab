"""The one error type for bad input: the CLI prints each problem as one line and exits with code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem the user must fix; one line per problem, naming key and file."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:  # raised in a worker process, re-raised in the parent
        return (type(self), (self.problems,))


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf: every rank stops at the same step; the message names it and the last good checkpoint."""


class DiskFullError(RuntimeError):
    """A file could not be written for lack of space; the message names it and the free space, and the file it
    would have replaced is intact."""
