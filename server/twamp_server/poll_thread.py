"""A thread that sleeps in ``epoll_wait`` on UDP sockets and does nothing else.

Both reflectors (TWAMP-Test and STAMP) answer on threads of their own rather than on the event
loop: an asyncio wake-up costs about as much CPU as a reflection, and at tens of thousands of
packets per second each wake-up finds one or two packets.  The event loop changes what a
reflector holds only under :attr:`PollThread.lock`, which the thread holds while it handles
one batch of readiness reports.  A bug on the thread must not silently end the reflection: it
is handed to ``on_failure``, so that the daemon stops and systemd restarts it.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable


class PollThread:
    """Calls ``on_ready(fd, events)`` for each ready descriptor, holding :attr:`lock`.

    The descriptor may be one no longer served (closed since it was reported), or the wake-up
    eventfd: ``on_ready`` ignores descriptors it does not know.
    """

    def __init__(
        self,
        name: str,
        on_ready: Callable[[int, int], None],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self.lock = threading.Lock()
        self._on_ready = on_ready
        self._on_failure = on_failure
        self._epoll = select.epoll()
        #: Wakes the thread to make it stop.
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def register(self, sock: socket.socket) -> None:
        """Watch ``sock`` for data (its error queue is reported too, as EPOLLERR)."""
        self._epoll.register(sock, select.EPOLLIN)

    def unregister(self, sock: socket.socket) -> None:
        self._epoll.unregister(sock)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread (if it ever ran) and wait for it."""
        self._stopping = True
        os.eventfd_write(self._wake, 1)
        if self._thread.is_alive():
            self._thread.join()

    def close(self) -> None:
        """Release the epoll and the eventfd, after :meth:`stop` and the sockets' unregister."""
        self._epoll.close()
        os.close(self._wake)

    def _run(self) -> None:
        poll, lock, on_ready = self._epoll.poll, self.lock, self._on_ready
        try:
            while not self._stopping:
                events = poll()
                with lock:
                    for fd, mask in events:
                        on_ready(fd, mask)
        except BaseException as error:  # a bug: let the daemon fail loudly, not reflect nothing
            self._on_failure(error)
