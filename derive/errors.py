"""The project's exceptions: each carries a message a user can act on and an exit code."""


class DeriveError(Exception):
    """A failure while deriving, verifying or rendering (exit code 1)."""

    exit_code = 1


class UsageError(DeriveError):
    """Bad input from the caller: an unknown name, a bad class count, malformed numbers (exit code 2)."""

    exit_code = 2


class VerificationError(DeriveError):
    """A step or a result did not survive a check."""


class RuleError(DeriveError):
    """A rule was applied to an expression it does not match (a bug in a derivation)."""
