"""The object every handler reaches through ``request.app[SANDBOX]``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from . import clock
from .blackout import Holds
from .ens_manager import EnsManager
from .faults import FaultRegistry, RateLimiter
from .imports import ImportManager
from .state import Config, State


@dataclass
class Sandbox:
    config: Config
    state: State
    faults: FaultRegistry
    limiter: RateLimiter
    imports: ImportManager
    ens: EnsManager
    on_reset: list[Callable[[], None]] = field(default_factory=list)
    # SMS held by a MobileConnect blackout window until it ends (blackout.py).
    holds: Holds = field(default_factory=Holds)

    def reset(self) -> None:
        self.holds.clear()
        clock.reset()
        self.state.reset()
        self.faults.clear()
        self.imports.reset()
        self.ens.reset()
        for hook in self.on_reset:
            hook()


SANDBOX: web.AppKey[Sandbox] = web.AppKey("sandbox", Sandbox)


def sandbox_of(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]
