"""The one error type for bad input: the CLI prints each problem as one line and exits with code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem the user must fix; one line per problem, naming key and file."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf: every rank stops at the same step; the message names it and the last good checkpoint."""
