"""Upload import files to MC's Enhanced FTP and read its export folder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath

import asyncssh

from stream_app.mc.errors import AuthError, PermanentMCError, TransientMCError
from stream_app.settings import Settings

log = logging.getLogger(__name__)

_FORBIDDEN = set('\\/:*<>|?"')


def attempt_name(base: str, attempt: int) -> str:
    """The file name for the n-th upload attempt of `base` (attempt 1 keeps the name).

    A broken upload may leave a partial file that MC imports anyway, so a retry must not reuse
    the name: `subscribers_w123.csv`, attempt 2 -> `subscribers_w123.r2.csv`.
    """
    if attempt <= 1:
        return base
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        return f"{base}.r{attempt}"
    return f"{stem}.r{attempt}.{ext}"


def error_report_path(file_name: str) -> str:
    """Where MC leaves the per-row error report of an imported file."""
    stem = posixpath.splitext(posixpath.basename(file_name))[0]
    return f"/Export/{stem}_errors.csv"


class SftpUploader:
    """One SSH connection, reused while it lives and reopened when MC drops it (it closes idle
    connections after 10 minutes)."""

    def __init__(
        self, settings: Settings, *, connect_timeout: float = 20.0, io_timeout: float = 120.0
    ) -> None:
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._io_timeout = io_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    async def upload(self, name: str, data: bytes) -> str:
        """Write `data` to the import folder under its final name; returns the remote path.

        The file is written in place, not uploaded then renamed: MC's File Drop fires on a
        completed upload and ignores renames.
        """
        if not name or _FORBIDDEN & set(name):
            raise PermanentMCError(f"file name {name!r} is not allowed by MC's SFTP", code="InvalidFileName")
        path = posixpath.join(self._settings.mc_sftp_folder, name)
        sftp = await self._client()
        try:
            async with asyncio.timeout(self._io_timeout):
                async with sftp.open(path, "wb") as remote:
                    await remote.write(data)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            await self._drop()
            raise TransientMCError(f"SFTP upload of {name} broke: {type(exc).__name__}: {exc}") from exc
        log.info("uploaded %s (%d bytes)", path, len(data))
        return path

    async def read_file(self, path: str) -> bytes | None:
        """A remote file's content, or None if it does not exist."""
        sftp = await self._client()
        try:
            async with asyncio.timeout(self._io_timeout):
                async with sftp.open(path, "rb") as remote:
                    data = await remote.read()
        except asyncssh.SFTPNoSuchFile:
            return None
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            await self._drop()
            raise TransientMCError(f"SFTP read of {path} broke: {type(exc).__name__}: {exc}") from exc
        return data if isinstance(data, bytes) else data.encode()

    async def connect(self) -> None:
        """Open the connection now (it is otherwise opened by the first upload)."""
        await self._client()

    async def close(self) -> None:
        await self._drop()

    async def _client(self) -> asyncssh.SFTPClient:
        async with self._lock:
            if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
                return self._sftp
            await self._drop_locked()
            self._conn, self._sftp = await self._connect()
            return self._sftp

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        s = self._settings
        known_hosts = s.mc_sftp_known_hosts
        if not known_hosts.is_file():
            raise PermanentMCError(
                f"SFTP host key file {known_hosts} does not exist: MC_SFTP_KNOWN_HOSTS must name an "
                f"OpenSSH known_hosts file holding the key of {s.mc_sftp_host}",
                code="HostKeyMissing",
            )
        try:
            conn = await asyncssh.connect(
                s.mc_sftp_host,
                s.mc_sftp_port,
                username=s.mc_sftp_user,
                password=s.mc_sftp_password,
                known_hosts=str(known_hosts),
                # Password only: don't offer the machine's own keys or agent to MC.
                client_keys=None,
                agent_path=None,
                connect_timeout=self._connect_timeout,
                keepalive_interval=30,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise PermanentMCError(
                f"SFTP host key of {s.mc_sftp_host}:{s.mc_sftp_port} is not the one in {known_hosts}: "
                f"{exc.reason}",
                code="HostKeyMismatch",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise AuthError(f"SFTP login as {s.mc_sftp_user!r} refused", code="PermissionDenied") from exc
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise TransientMCError(f"SFTP connect failed: {type(exc).__name__}: {exc}") from exc
        try:
            sftp = await conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            conn.close()
            raise TransientMCError(f"SFTP session failed to start: {type(exc).__name__}: {exc}") from exc
        return conn, sftp

    async def _drop(self) -> None:
        async with self._lock:
            await self._drop_locked()

    async def _drop_locked(self) -> None:
        sftp, conn = self._sftp, self._conn
        self._sftp = self._conn = None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                await asyncio.wait_for(conn.wait_closed(), timeout=5)
