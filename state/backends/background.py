"""One call run on a daemon thread, for the asynchronous part of a snapshot.

Why: a checkpoint's slow steps (an LMDB environment copy, writing and fsyncing a state
file) must not stall the task's mailbox thread. The task keeps such a call among its
pending snapshot's steps, polls :attr:`~BackgroundCall.done` between input batches, and is
woken through :attr:`~BackgroundCall.on_done`, which runs on the thread once the call has
finished (it is set before anyone checks ``done``, so no wake-up is missed).

Example::

    >>> call = BackgroundCall(lambda: 6 * 7, "example")
    >>> call.start()
    >>> call.result()
    42
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["BackgroundCall"]


class BackgroundCall:
    """``fn()`` on a daemon thread named ``name``: its value or the exception it raised."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        #: called on the thread when finished (set it before checking :attr:`done`)
        self.on_done: Callable[[], None] | None = None
        self._fn = fn
        self._finished = threading.Event()  #: set once ``fn`` returned (or failed)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            self._after()
            self._finished.set()
            on_done = self.on_done
            if on_done is not None:
                on_done()

    def _after(self) -> None:
        """Clean-up on the thread after ``fn``, before the call counts as done."""

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def join(self) -> None:
        """Wait until ``fn`` has returned."""
        self._thread.join()

    def result(self) -> Any:
        """What ``fn`` returned, once done; raises what it raised."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.value
