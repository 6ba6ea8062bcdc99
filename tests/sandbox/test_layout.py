"""The package's shape: no module imports one that imports it back; one way to launch the process."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from mc_sandbox import launch

PACKAGE = Path(launch.__file__).resolve().parent


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, TYPE_CHECKING imports included (a cycle is a cycle)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in modules:
        deps: set[str] = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mc_sandbox."):
                deps.add((node.module or "").split(".")[1])
        graph[name] = (deps & modules) - {name}
    return graph


def test_no_import_cycles() -> None:
    graph = _graph()
    order: list[str] = []
    pending = dict(graph)
    while pending:
        ready = sorted(m for m, deps in pending.items() if deps <= set(order))
        assert ready, f"import cycle among {sorted(pending)}"
        order += ready
        for m in ready:
            del pending[m]
    assert order.index("http") < order.index("rest") and order.index("ens_manager") < order.index("context")


def test_launch_command_and_readiness(tmp_path: Path) -> None:
    cmd = launch.command(8780, 8722, tmp_path, import_delay=1, extra=["--send-log-delay", "0.5"])
    assert cmd[:3] == [sys.executable, "-m", "mc_sandbox"]
    assert cmd[3:] == [
        "--http-port",
        "8780",
        "--sftp-port",
        "8722",
        "--state-dir",
        str(tmp_path),
        "--import-delay",
        "1",
        "--send-log-delay",
        "0.5",
    ]
    assert launch.is_ready_line("mc_sandbox ready http=http://127.0.0.1:1/ sftp=127.0.0.1:2 state=x\n")
    assert not launch.answers(f"http://127.0.0.1:{launch.free_port()}/", timeout=0.5)
