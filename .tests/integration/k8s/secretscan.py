"""Patterns for credentials that must never be written into the repository or a run's files.

Used by .tests/unit/test_no_secrets.py (profiles, scripts, docs) and by the Azure/Kubernetes integration
tests (every file their runs write, and the pods' logs).
"""

from __future__ import annotations

import re
from pathlib import Path

SECRET_PATTERNS = {
    # A connection string is a secret through its AccountKey or SharedAccessSignature part.
    "Azure account key": re.compile(r"AccountKey\s*=\s*[A-Za-z0-9+/=]{20,}"),
    "SAS token": re.compile(r"[?&;]?\bsig=[A-Za-z0-9%+/=]{16,}"),
    "SAS signature in a connection string": re.compile(r"SharedAccessSignature\s*=\s*\S{16,}"),
    "bearer token": re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]{20,}=*", re.I),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "client secret value": re.compile(r"AZURE_CLIENT_SECRET\s*[=:]\s*['\"]?[A-Za-z0-9~._\-]{16,}"),
    "kubeconfig token": re.compile(r"^\s*token\s*:\s*['\"]?[A-Za-z0-9\-._~+/]{20,}", re.M),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


def find_secrets(text: str, known_values: tuple[str, ...] = ()) -> list[str]:
    """Names of the secret kinds found in ``text`` (plus any of ``known_values`` appearing verbatim)."""
    found = [kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    found += [f"known secret value #{i}" for i, value in enumerate(known_values) if value and value in text]
    return found


def assert_no_secrets_in_tree(root: Path, known_values: tuple[str, ...]) -> None:
    """Scan every text file under ``root`` (run logs, Snakemake metadata, pod logs) for secrets."""
    leaks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if ".git" in path.parts or path.stat().st_size > 5_000_000 or "pip-deployments" in path.parts:
            continue
        hits = find_secrets(path.read_text(errors="ignore"), known_values)
        if hits:
            leaks.append(f"{path.relative_to(root)}: {', '.join(hits)}")
    assert not leaks, "secrets written to files of the run:\n" + "\n".join(leaks)
