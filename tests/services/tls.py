"""TLS material for tests: a throwaway CA and a server certificate for 127.0.0.1 (openssl)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

#: Tests that need certificates skip without it.
HAVE_OPENSSL = shutil.which("openssl") is not None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_server_cert(d: Path, name: str = "ca") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        f"{name}-server.key",
        "-out",
        f"{name}-server.csr",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}-server.csr",
        "-CA",
        f"{name}.crt",
        "-CAkey",
        f"{name}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        f"{name}-server.crt",
        cwd=d,
    )
    return d / f"{name}.crt", d / f"{name}-server.crt", d / f"{name}-server.key"
