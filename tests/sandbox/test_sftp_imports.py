from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.fixtures.sandbox import SandboxProcess

from .helpers import get_json, imports_by_file, sftp, upload, wait_for

GOOD = 'SubscriberKey,EmailAddress,MobileNumber,DrawerName\r\nA1,a1@example.com,886912345678,"EZ, Jr."\r\n'


def _completed(base: str, name: str) -> dict[str, Any] | None:
    jobs = imports_by_file(base, name)
    return jobs[0] if jobs and jobs[0]["status"] in ("Completed", "Error") else None


def test_upload_imports_with_row_errors_and_report(clean_sandbox: SandboxProcess, tmp_path: Path) -> None:
    base = clean_sandbox.http_url
    csv_text = (
        '"Subscriber Key","Email Address","First Name"\n'
        '"B1","b1@example.com","Ana"\n'
        '"B2"," b2@example.com","Ben"\n'
        '"","b3@example.com","Cy"\n'
        '"B4","b4@exämple.com","Di"\n'
        '"B5","b5@example","Ed"\n'
    )
    upload(clean_sandbox.sftp_port, tmp_path, "subscribers_w1.csv", csv_text)
    job = wait_for(lambda: _completed(base, "subscribers_w1.csv"), what="import")
    assert job["status"] == "Completed"
    assert job["definition_key"] == "subscribers_w1.csv"
    assert (job["total_rows"], job["succeeded"], len(job["errors"])) == (5, 1, 4)
    codes = {e["row"]: e["error_code"] for e in job["errors"]}
    assert codes == {2: 12000, 3: 12015, 4: 12000, 5: 12000}
    subs = {s["subscriber_key"]: s for s in get_json(base, "_sandbox/subscribers")}
    assert set(subs) == {"B1"} and subs["B1"]["attributes"]["First Name"] == "Ana"
    local = tmp_path / "report.csv"
    r = sftp(clean_sandbox.sftp_port, [f"get /Export/subscribers_w1_errors.csv {local}"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = local.read_text().splitlines()
    assert lines[0] == "SubscriberKey,EmailAddress,ErrorCode,ErrorMessage" and len(lines) == 5


def test_no_summary_row_until_processing(
    clean_sandbox: SandboxProcess, tmp_path: Path, zeep_client: Any
) -> None:
    from .test_soap import Soap

    soap = Soap(zeep_client, clean_sandbox.http_url)
    upload(clean_sandbox.sftp_port, tmp_path, "early.csv", GOOD)
    flt = soap.simple("ImportDefinitionCustomerKey", "equals", "early.csv")
    props = ["ImportStatus", "TotalRows", "NumberSuccessful", "NumberErrors", "TaskResultID"]
    assert soap.retrieve("ImportResultsSummary", props, flt).Results == []  # import delay not yet over
    row = wait_for(
        lambda: [
            r
            for r in soap.retrieve("ImportResultsSummary", props, flt).Results
            if r.ImportStatus == "Completed"
        ],
        what="completed row",
    )[0]
    assert (row.TotalRows, row.NumberSuccessful, row.NumberErrors) == (1, 1, 0)
    sub = get_json(clean_sandbox.http_url, "_sandbox/subscribers")[0]
    assert sub["mobile"] == "886912345678" and sub["attributes"]["DrawerName"] == "EZ, Jr."


def test_rename_and_part_files_do_not_trigger(clean_sandbox: SandboxProcess, tmp_path: Path) -> None:
    local = tmp_path / "x.csv"
    local.write_text(GOOD)
    r = sftp(
        clean_sandbox.sftp_port,
        [
            f"put {local} /Import/renamed.csv.part",
            "rename /Import/renamed.csv.part /Import/renamed.csv",
            f"put {local} /Import/other.tmp",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    # A control upload afterwards: once it has completed, the others would have been picked up too.
    upload(clean_sandbox.sftp_port, tmp_path, "control.csv", GOOD)
    wait_for(lambda: _completed(clean_sandbox.http_url, "control.csv"), what="control import")
    files = [j["file"] for j in get_json(clean_sandbox.http_url, "_sandbox/imports")]
    assert files == ["/Import/control.csv"]


def test_imports_run_one_after_another(clean_sandbox: SandboxProcess, tmp_path: Path) -> None:
    names = [f"seq_{i}.csv" for i in range(3)]
    local = []
    for n in names:
        p = tmp_path / n
        p.write_text(GOOD.replace("A1", n))
        local.append(p)
    r = sftp(clean_sandbox.sftp_port, [f"put {p} /Import/{p.name}" for p in local], tmp_path)
    assert r.returncode == 0, r.stderr
    base = clean_sandbox.http_url
    wait_for(lambda: all(_completed(base, n) for n in names), what="all imports")
    jobs = sorted(get_json(base, "_sandbox/imports"), key=lambda j: j["started_at"])
    for a, b in itertools.pairwise(jobs):
        assert a["ended_at"] <= b["started_at"]


def test_unparseable_file_ends_in_error(clean_sandbox: SandboxProcess, tmp_path: Path) -> None:
    upload(clean_sandbox.sftp_port, tmp_path, "noheader.csv", "just,some,values\n1,2,3\n")
    local = tmp_path / "latin1.csv"
    local.write_bytes("SubscriberKey,EmailAddress\nL1,caf\xe9@example.com\n".encode("latin-1"))
    assert sftp(clean_sandbox.sftp_port, [f"put {local} /Import/latin1.csv"], tmp_path).returncode == 0
    for name in ("noheader.csv", "latin1.csv"):
        job = wait_for(lambda n=name: _completed(clean_sandbox.http_url, n), what=name)  # type: ignore[misc]
        assert job["status"] == "Error" and job["error_message"]


def test_bad_password_refused(sandbox: SandboxProcess, tmp_path: Path) -> None:
    r = sftp(sandbox.sftp_port, ["ls /Import"], tmp_path, password="wrong")
    assert r.returncode != 0
    assert get_json(sandbox.http_url, "_sandbox/stats")["sftp_login_failures"] >= 1


async def test_known_hosts_verification(sandbox: SandboxProcess) -> None:
    line = sandbox.known_hosts.read_text().strip()
    assert line.startswith(f"[127.0.0.1]:{sandbox.sftp_port} ssh-ed25519 AAAA")
    async with (
        asyncssh.connect(
            "127.0.0.1",
            sandbox.sftp_port,
            username="sandbox",
            password="sandbox",
            known_hosts=str(sandbox.known_hosts),
            client_keys=None,
        ) as conn,
        conn.start_sftp_client() as client,
    ):
        assert sorted(await client.listdir("/")) == [".", "..", "Export", "Import", "Reports"]
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().split()
    bad = sandbox.state_dir / "bad_known_hosts"
    bad.write_text(f"[127.0.0.1]:{sandbox.sftp_port} {wrong[0]} {wrong[1]}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect(
            "127.0.0.1",
            sandbox.sftp_port,
            username="sandbox",
            password="sandbox",
            known_hosts=str(bad),
            client_keys=None,
        )
