"""Receiver-side credit accounting: exclusive credits per channel, floating per gate.

Flink's credit-based flow control, adapted to shared memory. A sender may hand
over a buffer only against a credit of its channel. Every channel starts with
``exclusive`` credits that are always given back when a buffer is recycled.
The gate additionally owns ``floating`` credits; they go to the channels that
announce the largest backlog (buffers queued at the sender) and come back to
the gate when a channel's backlog has drained. A slow receiver therefore holds
at most ``exclusive + floating`` buffers per channel, and a fast, busy channel
is not starved by idle ones.

Example::

    >>> ledger = CreditLedger(num_channels=2, exclusive=2, floating=4)
    >>> ledger.on_backlog(0, 3)        # channel 0 has 3 buffers queued
    [(0, 3)]
    >>> ledger.on_backlog(1, 5)        # only one floating credit is left
    [(1, 1)]
    >>> ledger.on_recycle(0)           # channel 0 keeps its credit (backlog 3)
    1
"""

from __future__ import annotations

__all__ = ["CreditLedger"]


class CreditLedger:
    """Decides how many credits each recycle or backlog announcement grants."""

    def __init__(self, num_channels: int, exclusive: int, floating: int) -> None:
        self.exclusive = exclusive
        self.floating_total = floating
        self.floating_free = floating
        self.floating = [0] * num_channels
        self.backlog = [0] * num_channels
        #: channels whose backlog exceeds their floating credits: the only candidates for
        #: a grant, so that a recycle with nobody wanting costs no scan of all channels
        self._wanting: set[int] = set()

    def initial_credit(self) -> int:
        """Credits a sender holds when the job starts."""
        return self.exclusive

    def on_backlog(self, channel: int, backlog: int) -> list[tuple[int, int]]:
        """Record an announced backlog; returns floating grants ``[(channel, n)]``."""
        self.backlog[channel] = backlog
        if backlog <= self.floating[channel]:
            self._wanting.discard(channel)
            return []
        self._wanting.add(channel)
        return self._distribute() if self.floating_free else []

    def on_recycle(self, channel: int) -> int:
        """A buffer of ``channel`` was consumed: credits to give back to its sender (0 or 1).

        A floating credit returns to the gate once the channel has no backlog.
        """
        if self.floating[channel] and self.backlog[channel] <= self.floating[channel] - 1:
            self.floating[channel] -= 1
            self.floating_free += 1
            return 0
        return 1

    def redistribute(self) -> list[tuple[int, int]]:
        """Floating grants after credits came back to the gate."""
        return self._distribute() if self.floating_free and self._wanting else []

    def _distribute(self) -> list[tuple[int, int]]:
        backlog, floating = self.backlog, self.floating
        wanting = sorted(((backlog[c] - floating[c], c) for c in self._wanting), reverse=True)
        grants = []
        for want, channel in wanting:
            if not self.floating_free:
                break
            n = min(want, self.floating_free)
            floating[channel] += n
            self.floating_free -= n
            grants.append((channel, n))
            if n == want:
                self._wanting.discard(channel)
        return grants
