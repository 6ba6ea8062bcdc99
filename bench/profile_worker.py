"""A worker that profiles itself with pyinstrument for a bounded time, started on a trigger file.

`python -m bench.profile_worker` runs `stream_app worker`; once the file `$BENCH_PROFILE_OUT.start`
exists it samples the worker's thread for `$BENCH_PROFILE_SECONDS` and writes a text report to
`$BENCH_PROFILE_OUT`. Whole-run profiling (`pyinstrument -m stream_app worker`) is far too heavy here.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pyinstrument import Profiler


def main() -> int:
    out = Path(os.environ["BENCH_PROFILE_OUT"])
    seconds = float(os.environ.get("BENCH_PROFILE_SECONDS", "30"))
    trigger = out.with_name(out.name + ".start")
    from stream_app.cli import worker
    from stream_app.runtime.app import Runtime

    def profile(runtime: Runtime) -> None:
        runtime.app.task(_profile)

    async def _profile() -> None:
        while not trigger.exists():
            await asyncio.sleep(0.2)
        profiler = Profiler(interval=0.002, async_mode="disabled")
        profiler.start()
        await asyncio.sleep(seconds)
        profiler.stop()
        out.write_text(profiler.output_text(unicode=True, color=False, show_all=False))

    return worker.main(sys.argv[1:], prepare=profile)


if __name__ == "__main__":
    sys.exit(main())
