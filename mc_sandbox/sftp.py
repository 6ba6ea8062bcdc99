"""Enhanced FTP: an asyncssh SFTP server with ``/Import``, ``/Export`` and ``/Reports``.

A file starts a file-drop import only when a handle opened for writing is closed by the client
(``SSH_FXP_CLOSE``) under its final name. Renames never start one (as in MC), names ending in ``.part``
or ``.tmp`` never do, and a handle closed because the session died (a dropped connection, or the
``disconnect`` fault) does not either: the partial file stays but is not imported.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any, cast

import asyncssh

from .context import Sandbox

FOLDERS = ("Import", "Export", "Reports")
MAX_SESSIONS = 10
LOCKOUT_FAILURES = 5
LOCKOUT_SECONDS = 30 * 60


def load_host_key(state_dir: Path) -> asyncssh.SSHKey:
    path = state_dir / "ssh_host_ed25519_key"
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(path))
    os.chmod(path, 0o600)
    return key


def write_known_hosts(state_dir: Path, port: int, key: asyncssh.SSHKey) -> Path:
    public = key.export_public_key("openssh").decode().split()
    path = state_dir / "known_hosts"
    path.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    return path


def ensure_folders(root: Path) -> None:
    for name in FOLDERS:
        (root / name).mkdir(parents=True, exist_ok=True)


def empty_folders(root: Path) -> None:
    for name in FOLDERS:
        folder = root / name
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
    ensure_folders(root)


class AuthPolicy:
    """Password auth with MC's lockout: 5 bad passwords lock the login for 30 minutes."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.failures = 0
        self.locked_until = 0.0
        self.sessions = 0

    def reset(self) -> None:
        self.failures = 0
        self.locked_until = 0.0

    def check(self, username: str, password: str) -> bool:
        cfg = self.sb.config
        if time.monotonic() < self.locked_until:
            self.sb.state.bump("sftp_login_failures")
            return False
        if username == cfg.sftp_user and password == cfg.sftp_password:
            self.failures = 0
            self.sb.state.bump("sftp_logins")
            return True
        self.sb.state.bump("sftp_login_failures")
        self.failures += 1
        if self.failures >= LOCKOUT_FAILURES:
            self.locked_until = time.monotonic() + LOCKOUT_SECONDS
            self.failures = 0
        return False


class _SSHServer(asyncssh.SSHServer):
    def __init__(self, policy: AuthPolicy) -> None:
        self.policy = policy
        self.conn: asyncssh.SSHServerConnection | None = None
        self.counted = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        if self.policy.sessions >= MAX_SESSIONS:
            conn.close()  # MC allows at most 10 simultaneous connections per account
            return
        self.policy.sessions += 1
        self.counted = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.policy.sessions -= 1
            self.counted = False

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return self.policy.check(username, password)


class _Upload:
    def __init__(self, path: str) -> None:
        self.path = path
        self.aborted = False


class _SFTPServer(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel[Any], sb: Sandbox) -> None:
        root = sb.config.sftp_root
        super().__init__(chan, chroot=str(root).encode())
        self.sb = sb
        self.chan = chan
        self.uploads: dict[int, _Upload] = {}
        self.dead = False

    def _virtual(self, path: bytes) -> str:
        local = Path(os.fsdecode(self.map_path(path)))
        rel = local.resolve().relative_to(self.sb.config.sftp_root.resolve()).as_posix()
        return "/" + rel if rel != "." else "/"

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT))
        vpath = self._virtual(path)
        if writing:
            if vpath.count("/") < 2:
                # Only the three folders live at the top level, as in MC.
                raise asyncssh.SFTPPermissionDenied("Files must be written inside Import, Export or Reports")
            fault = self.sb.faults.take("sftp")
            if fault is not None:
                self.sb.state.bump("faults_injected")
                if fault.mode in ("error500", "error429"):
                    raise asyncssh.SFTPFailure(f"Injected failure ({fault.mode})")
                if fault.mode in ("slow", "timeout"):
                    await asyncio.sleep(fault.seconds)
                    if fault.mode == "timeout":
                        raise asyncssh.SFTPFailure("Injected timeout")
                file_obj = super().open(path, pflags, attrs)
                upload = _Upload(vpath)
                if fault.mode == "disconnect":
                    upload.aborted = True
                self.uploads[id(file_obj)] = upload
                return file_obj
        file_obj = super().open(path, pflags, attrs)
        if writing:
            self.uploads[id(file_obj)] = _Upload(vpath)
        return file_obj

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        upload = self.uploads.get(id(file_obj))
        if upload is not None and upload.aborted and not self.dead:
            # The disconnect fault: let the first chunk land, then drop the whole SSH session.
            result = cast(int, super().write(file_obj, offset, data))
            self.dead = True
            self.chan.get_connection().abort()
            return result
        # The base class writes synchronously to a local file, so this is a plain int.
        return cast(int, super().write(file_obj, offset, data))

    def close(self, file_obj: object) -> None:
        super().close(file_obj)
        upload = self.uploads.pop(id(file_obj), None)
        if upload is None:
            return
        # Closed by session cleanup rather than by the client: the upload is incomplete.
        if self.dead or upload.aborted or self.chan.is_closing():
            return
        self.sb.state.bump("sftp_uploads")
        self.sb.imports.file_dropped(upload.path)

    def exit(self) -> None:
        self.dead = True


async def start_sftp(sb: Sandbox, host_key: asyncssh.SSHKey) -> tuple[asyncssh.SSHAcceptor, AuthPolicy]:
    policy = AuthPolicy(sb)
    ensure_folders(sb.config.sftp_root)
    server = await asyncssh.create_server(
        lambda: _SSHServer(policy),
        "127.0.0.1",
        sb.config.sftp_port,
        server_host_keys=[host_key],
        sftp_factory=lambda chan: _SFTPServer(chan, sb),
        allow_scp=False,
        login_timeout=30,
        keepalive_interval=0,
    )
    return server, policy
