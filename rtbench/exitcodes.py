"""Process exit codes shared by every rtbench command.

CI systems act on these, so they are part of the public interface: never renumber.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Every verdict passed (or the command did its job)."""
    SLO_FAILED = 1
    """At least one SLO verdict failed, or a regression gate tripped."""
    USAGE = 2
    """Bad flag, unreadable or invalid config/SLO/scenario file."""
    UNREACHABLE = 3
    """The target could not be reached at all (no connection ever opened)."""
    INCONCLUSIVE = 4
    """The load generator was saturated, so a failing verdict cannot be trusted."""
