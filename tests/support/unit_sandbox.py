#!/usr/bin/python3
"""Run a command under the sandbox a systemd unit asks for, without systemd as PID 1.

    /usr/bin/python3 unit_sandbox.py --unit FILE --root DIR -- COMMAND...

Test machines have no running systemd, so this applies the unit's own settings
with the kernel interfaces systemd 252 (Debian 12) uses for them, then execs
COMMAND (which keeps this pid, so signals reach it directly):

- ProtectSystem=strict: a private mount namespace where every mount is read-only
  except StateDirectory=, LogsDirectory= and ReadWritePaths= (taken under --root,
  where the scratch install put them); /proc, /sys and /dev are left as they are.
- PrivateTmp=true: /tmp and /var/tmp stay writable (though not private: the
  scratch root itself may live in /tmp; it is read-only all the same).
- ProtectHome=true: /home, /root and /run/user become empty and inaccessible.
- LimitNOFILE= (up to the hard limit this process has, without CAP_SYS_RESOURCE),
  UMask=.
- CapabilityBoundingSet=: every other capability leaves the bounding set, so the
  command (run as root here, since a scratch install has no service user) ends
  up with only those capabilities, as `User=` plus `AmbientCapabilities=` give it.
- NoNewPrivileges=.
- SystemCallFilter= (groups expanded by `systemd-analyze syscall-filter`, @default
  implied for an allow list, SystemCallErrorNumber= as the action, other
  architectures refused as with SystemCallArchitectures=native),
  MemoryDenyWriteExecute= (systemd 252's seccomp rules: no writable+executable
  mmap, no mprotect/pkey_mprotect to PROT_EXEC, no shmat with SHM_EXEC) and
  RestrictAddressFamilies= (socket() with another family fails EAFNOSUPPORT),
  each as its own seccomp filter, like systemd.

Not applied (the daemon makes none of these calls, or they need systemd itself):
PrivateDevices, Protect{KernelTunables,KernelModules,KernelLogs,
ControlGroups,Clock,Hostname,Proc}, RestrictNamespaces, RestrictRealtime,
RestrictSUIDSGID, LockPersonality, RemoveIPC, User=/Group=.

Needs root and Debian's python3-seccomp (libseccomp's binding), hence /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import re
import resource
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seccomp  # noqa: E402  (Debian: python3-seccomp)
import systemd_unit  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
PROT_WRITE, PROT_EXEC = 2, 4
SHM_EXEC = 0o100000
API_FILESYSTEMS = ("/proc", "/sys", "/dev")
CAPABILITIES = {name: number for number, name in enumerate([
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"])}


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                      flags, data.encode() if data else None), f"mount {target}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, per-mount flags to keep) from /proc/self/mountinfo, shallowest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        flags = 0
        for option in fields[5].split(","):
            flags |= MOUNT_FLAGS.get(option, 0)
        found.append((point, flags))
    return sorted(found, key=lambda item: item[0].count("/"))


def _under(path: str, parents: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def protect_system(writable: list[str], readonly: list[str], protect_home: bool) -> None:
    """Every mount read-only but `writable`; `readonly` are extra read-only bind points (they
    may lie inside a writable path, like a scratch root inside /tmp)."""
    existing = _mounts()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    binds = sorted({p: p in writable for p in writable + readonly}.items(), key=lambda item: item[0].count("/"))
    for path, rw in binds:
        _mount(path, path, None, MS_BIND | MS_REC)
        # A bind copies the flags of the mount it comes from: set them either way.
        _mount(None, path, None, MS_REMOUNT | MS_BIND | (0 if rw else MS_RDONLY))
    for point, flags in existing:
        if _under(point, list(API_FILESYSTEMS)) or _under(point, writable):
            continue
        # MS_BIND: only this namespace's mount becomes read-only, never the file system.
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    if protect_home:
        for path in ("/home", "/root", "/run/user"):
            if os.path.isdir(path):
                _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=000")


def syscall_groups() -> dict[str, list[str]]:
    """Every @group and its members (syscalls and nested groups), from systemd-analyze."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                          check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        if name.startswith("@"):
            if name not in groups:
                raise SystemExit(f"unit_sandbox: unknown system call group {name}")
            out |= expand(groups[name], groups)
        else:
            out.add(name.split(":")[0])
    return out


def syscall_filter(values: list[str], error_number: str | None, groups: dict[str, list[str]]) -> None:
    allow: set[str] | None = None
    deny: set[str] = set()
    for value in values:
        invert = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if allow is None and not invert:
            allow = expand(["@default"], groups) | names
        elif invert:
            if allow is not None:
                allow -= names
            else:
                deny |= names
        else:
            allow |= names
    refuse = seccomp.ERRNO(getattr(errno, error_number)) if error_number else seccomp.KILL_PROCESS
    if allow is not None:
        flt = seccomp.SyscallFilter(defaction=refuse)
        for name in sorted(allow):
            try:
                flt.add_rule(seccomp.ALLOW, name)
            except (RuntimeError, ValueError):
                pass  # not a system call on this architecture
    else:
        flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for name in sorted(deny):
            try:
                flt.add_rule(refuse, name)
            except (RuntimeError, ValueError):
                pass
    flt.load()


def memory_deny_write_execute() -> None:
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    eperm = seccomp.ERRNO(errno.EPERM)
    flt.add_rule(eperm, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC | PROT_WRITE, PROT_EXEC | PROT_WRITE))
    flt.add_rule(eperm, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    flt.add_rule(eperm, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    flt.add_rule(eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    flt.load()


def restrict_address_families(names: list[str]) -> None:
    families = sorted(getattr(socket, name) for name in names)
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EAFNOSUPPORT)
    flt.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.LT, families[0]))
    flt.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.GT, families[-1]))
    for family in range(families[0] + 1, families[-1]):
        if family not in families:
            flt.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.EQ, family))
    flt.load()


def keep_capabilities(names: list[str]) -> None:
    keep = {CAPABILITIES[name] for name in names}
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last_cap + 1):
        if cap not in keep:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"PR_CAPBSET_DROP {cap}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unit", required=True)
    parser.add_argument("--root", required=True, help="where the unit's directories were installed")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    unit = systemd_unit.service(args.unit)
    root = args.root.rstrip("/")

    groups = syscall_groups()  # before any filter: it runs systemd-analyze
    writable = [f"{root}/var/lib/{name}" for name in systemd_unit.words(unit, "StateDirectory")]
    writable += [f"{root}/var/log/{name}" for name in systemd_unit.words(unit, "LogsDirectory")]
    writable += [root + path.lstrip("-") for path in systemd_unit.words(unit, "ReadWritePaths")]
    if systemd_unit.boolean(unit, "PrivateTmp"):
        writable += ["/tmp", "/var/tmp"]
    if systemd_unit.last(unit, "ProtectSystem") == "strict":
        protect_system(writable, [root], systemd_unit.boolean(unit, "ProtectHome"))
    elif systemd_unit.last(unit, "ProtectSystem") not in (None, "no", "false"):
        raise SystemExit("unit_sandbox: only ProtectSystem=strict is emulated")
    nofile = systemd_unit.last(unit, "LimitNOFILE")
    if nofile:
        soft, _, hard = nofile.partition(":")
        limit = (int(soft), int(hard or soft))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
        except ValueError:  # raising the hard limit needs CAP_SYS_RESOURCE, which a container may lack
            ceiling = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit[0], ceiling), min(limit[1], ceiling)))
    umask = systemd_unit.last(unit, "UMask")
    if umask:
        os.umask(int(umask, 8))
    if "CapabilityBoundingSet" in unit:
        keep_capabilities(systemd_unit.words(unit, "CapabilityBoundingSet"))
    if systemd_unit.boolean(unit, "NoNewPrivileges"):
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    # Seccomp last: the filters would refuse the mount and prctl calls above.
    if systemd_unit.boolean(unit, "MemoryDenyWriteExecute"):
        memory_deny_write_execute()
    families = systemd_unit.words(unit, "RestrictAddressFamilies")
    if families:
        if families[0].startswith("~"):
            raise SystemExit("unit_sandbox: only an allow list of address families is emulated")
        restrict_address_families(families)
    if unit.get("SystemCallFilter"):
        syscall_filter(unit["SystemCallFilter"], systemd_unit.last(unit, "SystemCallErrorNumber"), groups)
    os.execv(args.command[0], args.command)


if __name__ == "__main__":
    main()
