"""The object every handler reaches through ``request.app[SANDBOX]``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from .faults import FaultRegistry, RateLimiter
from .state import Config, State

if TYPE_CHECKING:
    from .ens import EnsManager
    from .imports import ImportManager


@dataclass
class Sandbox:
    config: Config
    state: State
    faults: FaultRegistry
    limiter: RateLimiter
    imports: ImportManager
    ens: EnsManager
    on_reset: list[Callable[[], None]] = field(default_factory=list)

    def reset(self) -> None:
        self.state.reset()
        self.faults.clear()
        self.imports.reset()
        self.ens.reset()
        for hook in self.on_reset:
            hook()


SANDBOX: web.AppKey[Sandbox] = web.AppKey("sandbox", Sandbox)

DOC_URL = "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"


def sandbox_of(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]
