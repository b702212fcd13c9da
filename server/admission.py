"""Whether this node takes new connections, and who their users are."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .auth import Authenticator


class NodeAdmission:
    """The identity hook and the drain flag: the ``Admission`` every entry point reads."""

    __slots__ = ("authenticator", "draining")

    def __init__(self, authenticator: Authenticator | None) -> None:
        self.authenticator = authenticator
        # Set when the node drains (or the runner got a signal): nothing new starts here.
        self.draining = False
