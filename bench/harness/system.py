"""The machine: installing the anchors' Debian packages, and describing the host.

Anchor packages (Postfix, Dovecot) ship system services. The benchmarks
never use those: they run private instances under /tmp. So a package is
installed with its debconf questions answered "don't configure", and when this
harness is the one that installed it, the system service is disabled and
stopped right away, in case the package started it.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# debconf answers given before installing a package.
PRESEED = {
    "postfix": ["postfix postfix/main_mailer_type select No configuration"],
}
# System services a package may start; disabled and stopped after we install it.
SERVICES = {
    "postfix": ["postfix.service"],
    "dovecot-core": ["dovecot.service", "dovecot.socket"],
    "dovecot-imapd": ["dovecot.service", "dovecot.socket"],
}


def _run(argv: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> None:
    subprocess.run(argv, check=True, env=env, input=stdin, text=True)


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo"]


def is_installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                            capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def package_version(package: str) -> str | None:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def ensure_debs(packages: list[str]) -> list[str]:
    """Install the missing packages non-interactively; returns the ones installed."""
    missing = [p for p in dict.fromkeys(packages) if not is_installed(p)]
    if not missing:
        return []
    print(f"bench: installing Debian packages: {' '.join(missing)}", flush=True)
    answers = [line for p in missing for line in PRESEED.get(p, [])]
    if answers:
        _run([*_sudo(), "debconf-set-selections"], stdin="\n".join(answers) + "\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run([*_sudo(), "apt-get", "update", "-qq"], env=env)
    _run([*_sudo(), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
          "--no-install-recommends", *missing], env=env)
    for package in missing:
        for service in SERVICES.get(package, []):
            disable_system_service(service)
    return missing


def disable_system_service(service: str) -> None:
    """Make sure a freshly installed package's system service neither runs nor starts at boot."""
    booted = Path("/run/systemd/system").is_dir()
    if shutil.which("systemctl"):
        # Without a running systemd, `disable` still removes the boot-time links.
        subprocess.run([*_sudo(), "systemctl", "disable", *(["--now"] if booted else []), service],
                       capture_output=True)
    name = service.removesuffix(".service")
    if not booted and Path("/etc/init.d", name).exists():
        # No systemd: the package's maintainer script may have started it through init.d.
        subprocess.run([*_sudo(), "/etc/init.d/" + name, "stop"], capture_output=True)


def _meminfo_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _filesystem(path: Path) -> str:
    result = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)],
                            capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def machine_info(work_dir: Path, versions: dict[str, str | None]) -> dict:
    """What the figures were measured on; `versions` adds the anchors' versions."""
    memory = _meminfo_bytes()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_bytes": memory,
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "work_dir": str(work_dir),
        "work_dir_filesystem": _filesystem(work_dir),
        **{f"{name}_version": version for name, version in versions.items()},
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()
