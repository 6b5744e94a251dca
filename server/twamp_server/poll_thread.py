"""A thread that sleeps in ``epoll_wait`` on UDP sockets and does nothing else.

Both reflectors (TWAMP-Test and STAMP) answer on threads of their own rather than on the event
loop: an asyncio wake-up costs about as much CPU as a reflection, and at tens of thousands of
packets per second each wake-up finds one or two packets.  The event loop changes what a
reflector holds only under :attr:`PollThread.lock`, which the thread holds while it handles
one batch of readiness reports.  A bug on the thread must not silently end the reflection: it
is handed to ``on_failure``, so that the daemon stops and systemd restarts it.  The thread
also keeps count of what the kernel dropped at the sockets it watches (their receive buffers
full), as those sockets come and go.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable

from twamp_common.udp_options import socket_drops


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
        self._watched: dict[int, socket.socket] = {}
        #: Datagrams dropped at the sockets no longer watched.
        self._dropped_before = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def register(self, sock: socket.socket) -> None:
        """Watch ``sock`` for data (its error queue is reported too, as EPOLLERR)."""
        self._epoll.register(sock, select.EPOLLIN)
        self._watched[sock.fileno()] = sock

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (before it is closed: its drops are read here)."""
        self._epoll.unregister(sock)
        del self._watched[sock.fileno()]
        self._dropped_before += socket_drops(sock) or 0

    def dropped(self) -> int:
        """Datagrams the kernel dropped at the sockets watched, now or before, since each was
        opened; the caller holds :attr:`lock`, as for register and unregister."""
        return self._dropped_before + sum(
            socket_drops(sock) or 0 for sock in self._watched.values()
        )

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
