"""One netlink socket in one network namespace, sending batches of tc requests.

Owns the socket's lifetime and the mapping of kernel replies back to requests; knows nothing
about link states. A batch goes out in one sendmsg() and the kernel processes every message in
it even after one fails, so each request gets its own outcome.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netem.errors import NetemError
from netem.shapers.tc_requests import TcRequest


class IPRouteLike(Protocol):
    """What the shaper uses of pyroute2's IPRoute (a fake implements the same three calls)."""

    def link_lookup(self, **spec: Any) -> list[int]: ...

    def nlm_request_batch(self, msgs: Sequence[Any], noraise: bool = False) -> Any: ...

    def close(self) -> None: ...


IPRouteFactory = Callable[[str | None], IPRouteLike]


def default_ipr_factory(netns: str | None) -> IPRouteLike:
    """A new IPRoute in `netns` (None: this process's namespace), never creating the namespace.

    groups=0: a shaper socket must not subscribe to multicast events, or every change it makes
    would queue a notification on it that nobody reads.
    """
    if netns is None:
        return IPRoute(groups=0)
    try:
        return IPRoute(netns=netns, flags=0, groups=0)
    except FileNotFoundError as exc:
        raise NetemError(f"network namespace {netns!r} does not exist") from exc


def describe_error(error: NetlinkError) -> str:
    """'EEXIST (File exists)' from a NetlinkError."""
    name = errno.errorcode.get(error.code, str(error.code))
    return f"{name} ({os.strerror(error.code)})"


class TcSession:
    """Sends tc requests through one IPRoute (owned: closed by close())."""

    def __init__(self, ipr: IPRouteLike, netns: str | None) -> None:
        self._ipr = ipr
        self.netns = netns
        self._closed = False

    @property
    def where(self) -> str:
        return f"namespace {self.netns!r}" if self.netns else "the host namespace"

    def ifindex(self, ifname: str) -> int:
        """Index of `ifname` in this namespace; NetemError naming both when absent."""
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetemError(f"interface {ifname!r} not found in {self.where}")
        return int(found[0])

    def send(self, requests: Sequence[TcRequest]) -> list[NetlinkError | None]:
        """Send all requests in one batch; per request None (done) or the kernel's error.

        pyroute2 (0.9.5) reports only successful acks when noraise=True, so a request whose
        ack is missing is sent once more alone to read its errno (tc requests are idempotent
        on failure: a refused add/change/delete changed nothing).
        """
        if not requests:
            return []
        msgs = [r.to_message() for r in requests]
        acks = self._ipr.nlm_request_batch(msgs, noraise=True)
        done = {
            ack["header"]["sequence_number"]
            for ack in acks
            if ack["header"].get("error") is None and not ack.get("error")
        }
        results: list[NetlinkError | None] = []
        for request, msg in zip(requests, msgs, strict=True):
            if msg["header"]["sequence_number"] in done:
                results.append(None)
            else:
                results.append(self._error_of(request))
        return results

    def _error_of(self, request: TcRequest) -> NetlinkError | None:
        try:
            self._ipr.nlm_request_batch([request.to_message()], noraise=False)
        except NetlinkError as exc:
            return exc
        return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ipr.close()
