"""When a file sink closes its current part file and starts a new one (PyFlink's rolling policies).

Flink asks three questions: before each record (roll on size), on a periodic processing-time
check (roll on age or inactivity), and at each checkpoint. On-record rolling here is always
"the part already holds more than N bytes" (:meth:`RollingPolicy.event_size_limit`), which lets
the sink cut a whole batch with arithmetic instead of asking per record.

Example::

    >>> policy = RollingPolicy.default_rolling_policy(part_size=100, rollover_interval=1000)
    >>> part = PartFileInfo(size=120, creation_time=0, last_update_time=500)
    >>> policy.should_roll_on_event(part, "x"), policy.should_roll_on_processing_time(part, 999)
    (True, False)
    >>> policy.should_roll_on_processing_time(part, 1000)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DefaultRollingPolicy",
    "OnCheckpointRollingPolicy",
    "PartFileInfo",
    "RollingPolicy",
]


@dataclass
class PartFileInfo:
    """What a policy knows about an in-progress part file; times in epoch ms."""

    size: int
    creation_time: int
    last_update_time: int


class RollingPolicy:
    """Decides when to roll; use the static factories."""

    def event_size_limit(self) -> int | None:
        """Roll before a record when the part holds more bytes than this; None = never."""
        return None

    def should_roll_on_event(self, part_file_state: PartFileInfo, element: Any) -> bool:
        limit = self.event_size_limit()
        return limit is not None and part_file_state.size > limit

    def should_roll_on_processing_time(
        self, part_file_state: PartFileInfo, current_time: int
    ) -> bool:
        return False

    def should_roll_on_checkpoint(self, part_file_state: PartFileInfo) -> bool:
        return True

    @staticmethod
    def default_rolling_policy(
        part_size: int = 1024 * 1024 * 128,
        rollover_interval: int = 60 * 1000,
        inactivity_interval: int = 60 * 1000,
    ) -> DefaultRollingPolicy:
        """Roll when a part exceeds ``part_size`` bytes, is ``rollover_interval`` ms old, or
        has had no record for ``inactivity_interval`` ms."""
        return DefaultRollingPolicy(part_size, rollover_interval, inactivity_interval)

    @staticmethod
    def on_checkpoint_rolling_policy() -> OnCheckpointRollingPolicy:
        """Roll only at checkpoints (and at the end of bounded input)."""
        return OnCheckpointRollingPolicy()


class DefaultRollingPolicy(RollingPolicy):
    def __init__(
        self,
        part_size: int = 1024 * 1024 * 128,
        rollover_interval: int = 60 * 1000,
        inactivity_interval: int = 60 * 1000,
    ) -> None:
        if part_size <= 0 or rollover_interval <= 0 or inactivity_interval <= 0:
            raise ValueError("part_size, rollover_interval and inactivity_interval must be > 0")
        self.part_size = part_size
        self.rollover_interval = rollover_interval
        self.inactivity_interval = inactivity_interval

    def event_size_limit(self) -> int | None:
        return self.part_size

    def should_roll_on_processing_time(
        self, part_file_state: PartFileInfo, current_time: int
    ) -> bool:
        return (
            current_time - part_file_state.creation_time >= self.rollover_interval
            or current_time - part_file_state.last_update_time >= self.inactivity_interval
        )

    def should_roll_on_checkpoint(self, part_file_state: PartFileInfo) -> bool:
        return part_file_state.size > self.part_size

    def __repr__(self) -> str:
        return (
            f"RollingPolicy.default_rolling_policy({self.part_size}, "
            f"{self.rollover_interval}, {self.inactivity_interval})"
        )


class OnCheckpointRollingPolicy(RollingPolicy):
    def __repr__(self) -> str:
        return "RollingPolicy.on_checkpoint_rolling_policy()"
