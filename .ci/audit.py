#!/usr/bin/env python3
"""CI's audit of what the images install for known vulnerabilities.

    .venv/bin/python .ci/audit.py [LOCK ...] [--ignore requirements/audit-ignore.txt]

Audits the Bento's lock files (requirements/serving.lock and serving-gpu.lock by default): every
package the CPU and GPU images install, at its locked version. In order:

1. pip-audit, with the service it can reach (PyPI's per-release JSON API, else OSV), as
   ``pip-audit -r LOCK --require-hashes --disable-pip --strict``: a package it cannot audit fails
   the audit instead of passing silently.
2. When neither service answers (this workplace reaches PyPI's package index and its per-project
   JSON, but not its per-release JSON nor OSV), the log says so, pip-audit still runs without
   --strict as a witness (it then audits nothing), and one fallback runs instead: PyPI's
   per-project JSON, current data but partial. It lists the known vulnerabilities of the
   project's latest release only, so it covers every locked package pinned at its latest release;
   the others are listed as NOT AUDITED.

No usable offline database was found to cover the rest. ``safety-db`` is the only one bundled on
PyPI, but it is a 2021 snapshot and its data is licensed CC BY-NC-SA 4.0 (non-commercial use
only), so it is not used; ``appthreat-vulnerability-db`` ships no data and downloads its database
at run time.

A known vulnerability fails the audit (exit 1) unless its ID, or one of its aliases, is listed in
the ignore file with a reason: ``ID  # why it does not apply or cannot be fixed yet``. Exit 2: the
ignore file or a lock cannot be read, or pip-audit fails where it reaches a service. An audit that
reaches nothing at all says so and passes: it has nothing to report, which the log states as
"NOT AUDITED".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = [ROOT / "requirements" / "serving.lock", ROOT / "requirements" / "serving-gpu.lock"]
IGNORE = ROOT / "requirements" / "audit-ignore.txt"
TIMEOUT = 15  # seconds per HTTP request
PIP_AUDIT_TIMEOUT = 600

PYPI_RELEASE_JSON = "https://pypi.org/pypi/{name}/{version}/json"  # what pip-audit's PyPI service asks
PYPI_PROJECT_JSON = "https://pypi.org/pypi/{name}/json"
OSV_QUERY = "https://api.osv.dev/v1/query"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9.]*-[A-Za-z0-9.-]+$")  # PYSEC-2024-1, GHSA-xxxx-…, CVE-…


class AuditError(Exception):
    """A lock or the ignore file cannot be read as this script needs."""


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    source: str  # which database said so
    aliases: tuple[str, ...] = ()
    fixed_in: tuple[str, ...] | None = None  # None: the database does not say
    summary: str = ""

    @property
    def ids(self) -> set[str]:
        return {self.id, *self.aliases}

    def line(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        fixed = ("" if self.fixed_in is None else
                 f"; fixed in {', '.join(self.fixed_in)}" if self.fixed_in else "; no fixed version")
        summary = f": {self.summary[:160]}" if self.summary else ""
        return f"{self.package}=={self.version} {self.id}{aliases} [{self.source}]{fixed}{summary}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    audited_with_current_data: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def say(message: str = "") -> None:
    print(f"audit: {message}" if message else "audit:", flush=True)


# --- inputs ------------------------------------------------------------------------------------

def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a hashed lock file, every entry an `==` pin with a sha256."""
    if not path.is_file():
        raise AuditError(f"no lock file {path}: `make lock` writes it")
    pins: dict[str, str] = {}
    logical = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    for number, line in enumerate(logical.splitlines(), 1):
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        match = _PIN.match(line)
        if not match:
            raise AuditError(f"{path.name}: not an `==` pin: {line[:80]}")
        if not _HASH.search(line):
            raise AuditError(f"{path.name}: {match[1]} has no --hash=sha256:…")
        pins[canonicalize_name(match[1])] = match[2]
    if not pins:
        raise AuditError(f"{path}: no packages")
    return pins


def read_ignore(path: Path) -> dict[str, str]:
    """{advisory ID: reason}; every entry needs a reason after `#`."""
    ignore: dict[str, str] = {}
    if not path.is_file():
        return ignore
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = (part.strip() for part in line.partition("#"))
        if not _ID.match(vuln_id):
            raise AuditError(f"{path.name}:{number}: not an advisory ID: {vuln_id!r}")
        if not reason:
            raise AuditError(f"{path.name}:{number}: {vuln_id} has no reason (`ID  # why`)")
        if vuln_id in ignore:
            raise AuditError(f"{path.name}:{number}: {vuln_id} is listed twice")
        ignore[vuln_id] = reason
    return ignore


def split_ignored(findings: list[Finding], ignore: dict[str, str]) -> tuple[list[Finding], list[Finding]]:
    kept = [f for f in findings if not f.ids & ignore.keys()]
    return kept, [f for f in findings if f.ids & ignore.keys()]


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per advisory and package version: databases list one advisory under several
    IDs (PYSEC-…, GHSA-…, CVE-…), each naming the others as aliases."""
    out: list[Finding] = []
    for f in findings:
        if not any((g.package, g.version) == (f.package, f.version) and g.ids & f.ids for g in out):
            out.append(f)
    return out


# --- network -----------------------------------------------------------------------------------

def http_json(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              "User-Agent": "textcls-ci-audit"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return json.load(response)


def probe(url: str, payload: dict | None = None) -> str | None:
    """None when the URL answers with JSON; else why not, in a few words."""
    try:
        http_json(url, payload)
        return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} from {url}"
    except urllib.error.URLError as exc:
        return f"{url} unreachable ({exc.reason})"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"


def reachable_service(pins: dict[str, str]) -> tuple[str | None, list[str]]:
    """The pip-audit service that answers here ('pypi' or 'osv'), and why the others do not."""
    name, version = next(iter(pins.items()))  # exists on PyPI: the lock was resolved from it
    why = []
    pypi = probe(PYPI_RELEASE_JSON.format(name=name, version=version))
    if pypi is None:
        return "pypi", why
    why.append(f"PyPI's per-release JSON API: {pypi}")
    osv = probe(OSV_QUERY, {"package": {"name": name, "ecosystem": "PyPI"}, "version": version})
    if osv is None:
        return "osv", why
    why.append(f"OSV: {osv}")
    return None, why


# --- 1. pip-audit ------------------------------------------------------------------------------

def pip_audit(locks: list[Path], service: str, *,
              strict: bool) -> tuple[list[Finding], set[str], dict[str, str]]:
    """Findings, the packages audited, and the skipped ones with pip-audit's reason."""
    cmd = [sys.executable, "-m", "pip_audit", "--require-hashes", "--disable-pip", "-s", service,
           "-f", "json", "--progress-spinner", "off"]
    for lock in locks:
        cmd += ["-r", str(lock)]
    if strict:
        cmd.append("--strict")
    say("$ " + " ".join(["pip-audit", *cmd[3:]]).replace(str(ROOT) + "/", ""))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_AUDIT_TIMEOUT)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise AuditError(f"pip-audit failed (exit {result.returncode}):\n{tail}") from None
    findings, audited, skipped = [], set(), {}
    for dep in report.get("dependencies", []):
        name = canonicalize_name(dep["name"])
        if "skip_reason" in dep:
            skipped[name] = dep["skip_reason"]
            continue
        audited.add(name)
        for vuln in dep.get("vulns", []):
            findings.append(Finding(name, dep["version"], vuln["id"], f"pip-audit/{service}",
                                    tuple(vuln.get("aliases", [])), tuple(vuln.get("fix_versions", [])),
                                    first_line(vuln.get("description"))))
    return findings, audited, skipped


# --- 2. PyPI's per-project JSON: the latest release's vulnerabilities ----------------------------

def pypi_latest(pins: dict[str, str], fetch=http_json) -> tuple[list[Finding], set[str], dict[str, str]]:
    """Findings for the packages pinned at their latest release, those packages, and the others
    with why they are not covered."""

    def one(item):
        name, version = item
        try:
            return name, version, fetch(PYPI_PROJECT_JSON.format(name=name)), None
        except (OSError, ValueError) as exc:
            return name, version, None, str(exc)

    findings, covered, uncovered = [], set(), {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for name, version, data, error in pool.map(one, sorted(pins.items())):
            if data is None:
                uncovered[name] = f"no per-project JSON ({error})"
                continue
            latest = data.get("info", {}).get("version")
            if "vulnerabilities" not in data:
                uncovered[name] = "its per-project JSON has no vulnerabilities field"
            elif latest != version:
                uncovered[name] = f"locked {version}, latest {latest}"
            else:
                covered.add(name)
                for vuln in data["vulnerabilities"]:
                    if vuln.get("withdrawn"):
                        continue
                    findings.append(Finding(name, version, vuln["id"], "PyPI, latest release",
                                            tuple(vuln.get("aliases") or []),
                                            tuple(vuln.get("fixed_in") or []),
                                            first_line(vuln.get("summary") or vuln.get("details"))))
    return findings, covered, uncovered


# --- main --------------------------------------------------------------------------------------

def audit(locks: list[Path], ignore_file: Path) -> int:
    ignore = read_ignore(ignore_file)
    per_lock = {lock: read_lock(lock) for lock in locks}
    pins: dict[str, str] = {}
    for lock_pins in per_lock.values():
        for name, version in lock_pins.items():
            if pins.setdefault(name, version) != version:
                raise AuditError(f"{name} is locked at {pins[name]} and {version}: audit them apart")
    say(f"{len(pins)} packages locked in {', '.join(p.name for p in locks)}; "
        f"{len(ignore)} advisories ignored by {ignore_file.name}")

    report = Report()
    service, why = reachable_service(pins)
    if service:
        say(f"pip-audit's {service} service answers: auditing strictly")
        findings, audited, skipped = pip_audit(locks, service, strict=True)
        report.findings += findings
        report.audited_with_current_data |= audited
        say(f"pip-audit ({service}): {len(audited)} of {len(pins)} packages audited")
    else:
        say("=" * 78)
        say("pip-audit CANNOT REACH A VULNERABILITY SERVICE from here:")
        for line in why:
            say(f"  - {line}")
        say("so it cannot audit the lock; falling back to what can be reached (below)")
        say("=" * 78)
        try:  # the witness: what pip-audit itself makes of it
            findings, audited, skipped = pip_audit(locks, "pypi", strict=False)
        except (AuditError, subprocess.SubprocessError) as exc:
            say(f"pip-audit (pypi, not strict) failed: {exc}")
        else:
            reasons = sorted({r.split(":")[0] for r in skipped.values()})
            say(f"pip-audit (pypi, not strict): {len(audited)} audited, {len(skipped)} skipped "
                f"({'; '.join(reasons) or 'none'})")
            report.findings += findings
            report.audited_with_current_data |= audited

        say("fallback: PyPI's per-project JSON (the latest release's known vulnerabilities)")
        findings, covered, uncovered = pypi_latest(pins)
        report.findings += findings
        report.audited_with_current_data |= covered
        say(f"  {len(covered)} of {len(pins)} packages are locked at their latest release and "
            "were checked against PyPI's current advisories")
        if uncovered:
            say(f"  not covered ({len(uncovered)}): "
                + ", ".join(f"{n} ({r})" for n, r in sorted(uncovered.items())))

        missing = sorted(set(pins) - report.audited_with_current_data)
        if missing:
            say(f"NOT AUDITED against current data ({len(missing)}): {', '.join(missing)}")

    kept, ignored = split_ignored(dedupe(report.findings), ignore)
    for f in ignored:
        reason = next(ignore[i] for i in sorted(f.ids) if i in ignore)
        say(f"ignored: {f.line()} -- {reason}")
    stale = sorted(i for i in ignore if not any(i in f.ids for f in report.findings))
    if stale and service:  # only a full audit can say an ignored advisory no longer applies
        say(f"no longer found, remove from {ignore_file.name}: {', '.join(stale)}")
    if kept:
        say(f"{len(kept)} known vulnerabilities:")
        for f in kept:
            say(f"  {f.line()}")
        say(f"upgrade (requirements/serving.txt or constraints.txt, then `make lock`), or list the "
            f"ID in {ignore_file.relative_to(ROOT) if ignore_file.is_relative_to(ROOT) else ignore_file}"
            " with a one-line reason")
        return 1
    say("no known vulnerabilities" + ("" if service else " in what could be checked (see above)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locks", nargs="*", type=Path, default=LOCKS)
    parser.add_argument("--ignore", type=Path, default=IGNORE)
    args = parser.parse_args(argv)
    try:
        return audit([p.resolve() for p in args.locks], args.ignore.resolve())
    except AuditError as exc:
        say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
