"""The `openmailserver` command (typer).

Admin commands talk to the data directory directly (SQLite in WAL mode is safe
to share with a running daemon). Human output by default, `--json` for scripts.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .config import ConfigError, Settings, load_settings, parse_assignments, render_reference
from .errors import ErrorCode, MailError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="openmailserver: SMTP, IMAP, DKIM, a durable queue and an HTTP API in one daemon.")
mailbox_app = typer.Typer(no_args_is_help=True, help="Mailboxes: add, list, delete, set passwords.")
alias_app = typer.Typer(no_args_is_help=True, help="Aliases (source -> local mailboxes).")
key_app = typer.Typer(no_args_is_help=True, help="HTTP API keys.")
config_app = typer.Typer(no_args_is_help=True, help="Settings.")
docs_app = typer.Typer(no_args_is_help=True, help="Generated reference documents (docs/).")
queue_app = typer.Typer(no_args_is_help=True, help="The outbound queue.")
backup_app = typer.Typer(no_args_is_help=True, help="Encrypted backups: create, verify, list.")
domain_app = typer.Typer(no_args_is_help=True, help="Mail domains: add, list, show, verify, zone, delete.")
dns_app = typer.Typer(no_args_is_help=True, help="DNS records to publish.")
app.add_typer(mailbox_app, name="mailbox")
app.add_typer(alias_app, name="alias")
app.add_typer(key_app, name="key")
app.add_typer(config_app, name="config")
app.add_typer(docs_app, name="docs")
app.add_typer(queue_app, name="queue")
app.add_typer(backup_app, name="backup")
app.add_typer(domain_app, name="domain")
app.add_typer(dns_app, name="dns")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="TOML settings file.")]
DevOpt = Annotated[bool, typer.Option("--dev", help="Development profile: loopback, unprivileged ports, ./data.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a setting: NAME=VALUE.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _settings(config: str | None, dev: bool, sets: list[str] | None) -> Settings:
    try:
        return load_settings(config_file=config, dev=dev, overrides=parse_assignments(sets or []))
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _db(settings: Settings):
    from .store import Database

    if not settings.db_path.exists():
        err.print(f"[red]no database at {settings.db_path}[/red]; run `openmailserver init` first "
                  "(with the same --config/--dev/--set options).")
        raise typer.Exit(1)
    return Database(settings.db_path)


def _fail(exc: MailError, as_json: bool) -> None:
    if as_json:
        print(json.dumps(exc.as_json()))
    else:
        err.print(f"[red]error:[/red] {exc.message}" + (f"\n  fix: {exc.fix}" if exc.fix else ""))
    raise typer.Exit(1)


def _emit(data: Any, as_json: bool, human: str | Table) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        out.print(human)


@contextmanager
def _progress(label: str, enabled: bool):
    """A byte progress bar on stderr for long work (not with --json, not without a terminal)."""
    if not enabled or not err.is_terminal:
        yield None
        return
    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _table(columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


# ---- init / serve / status -------------------------------------------------

def _print_init(report, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"changed": report.changed, "created": report.created, "admin_key": report.admin_key}))
        return
    if not report.changed:
        out.print("Already initialised; nothing changed.")
    for item in report.created:
        out.print(f"created {item}")
    if report.admin_key:
        out.print(f"\n[bold]Admin API key (shown once, stored only as a hash):[/bold]\n  {report.admin_key}\n")


@app.command()
def init(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Create the data directory, database, TLS certificate, DKIM key and admin key."""
    from .ops.bootstrap import init_data_dir

    settings = _settings(config, dev, set_)
    try:
        report = init_data_dir(settings)
    except MailError as exc:
        _fail(exc, as_json)
    _print_init(report, as_json)


@app.command()
def serve(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None) -> None:
    """Run the daemon (initialises an empty data directory first)."""
    from .daemon import StartupError, run
    from .ops.bootstrap import init_data_dir
    from .ops.pidfile import running_pid
    from .telemetry.logs import setup_logging

    settings = _settings(config, dev, set_)
    pid = running_pid(settings)
    if pid:
        err.print(f"[red]a daemon (pid {pid}) already serves {settings.data_dir}[/red]")
        raise typer.Exit(1)
    report = init_data_dir(settings)
    if report.changed:
        _print_init(report, False)
    setup_logging(settings)

    def ready(listeners: dict[str, tuple[str, int]]) -> None:
        lines = [f"openmailserver {__version__} serving {settings.data_dir}"]
        for name, (host, port) in listeners.items():
            lines.append(f"  {name:<20} {host}:{port}")
        api = listeners.get("api")
        if api:
            key = report.admin_key or "<admin-api-key>"
            lines.append(f"\nTry it:\n  curl -H 'X-OpenMailserver-Key: {key}' http://{api[0]}:{api[1]}/v1/mailboxes")
        print("\n".join(lines), file=sys.stderr, flush=True)

    try:
        # SIGHUP rebuilds the settings from the same file, environment and flags (see ops/reload.py).
        run(settings, ready, reload_settings=lambda: load_settings(
            config_file=config, dev=dev, overrides=parse_assignments(set_ or [])))
    except StartupError as exc:
        err.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def status(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Whether the daemon runs, and what the data directory holds."""
    from .interprocess.board import Board
    from .ops.pidfile import running_pid
    from .store import accounts, messages, queue

    settings = _settings(config, dev, set_)
    db = _db(settings)
    pid = running_pid(settings)
    board = Board.read(settings.board_path) if pid else None
    data = {
        "version": __version__,
        "data_dir": str(settings.data_dir),
        "running": pid is not None,
        "pid": pid,
        # Every worker process of a running daemon: its pid, whether it serves, restarts, sessions.
        "workers": board.workers_status() if board else [],
        "queue": db.read(queue.queue_depth)[0],
        "domains": [d["name"] for d in db.read(accounts.list_domains)],
        "mailboxes": len(db.read(accounts.list_mailboxes)),
        "aliases": len(db.read(accounts.list_aliases)),
        "messages": db.read(messages.count_messages),
        "listeners": {name: f"{h}:{p}" for name, (h, p) in settings.listeners().items()},
    }
    human = _table(["", ""], [[k, ", ".join(map(str, v)) if isinstance(v, list) else
                               (", ".join(f"{a} {b}" for a, b in v.items()) if isinstance(v, dict) else v)]
                              for k, v in data.items() if k != "workers"] +
                   [[f"worker {w['worker']}", f"pid {w['pid']}, {'serving' if w['serving'] else 'not serving'}, "
                     f"{w['restarts']} restarts, {sum(w['sessions'].values())} sessions"] for w in data["workers"]])
    _emit(data, as_json, human)


# ---- mailboxes -------------------------------------------------------------

@mailbox_app.command("add")
def mailbox_add(address: str, password: Annotated[Optional[str], typer.Option(
                    help="Password; generated when omitted.")] = None,
                quota: Annotated[Optional[int], typer.Option(help="Quota in bytes (0 = unlimited).")] = None,
                config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                as_json: JsonOpt = False) -> None:
    """Create a mailbox ADDRESS (its domain too, with a DKIM key, when new)."""
    from .core import accounts as core

    settings = _settings(config, dev, set_)
    local, _, domain = address.rpartition("@")
    try:
        result = core.create_mailbox(settings, _db(settings), local, domain, password=password, quota=quota)
    except MailError as exc:
        _fail(exc, as_json)
    mailbox = core.public_mailbox(result["mailbox"])
    data = {"mailbox": mailbox, "password": result["password"],
            "api_key": {"id": result["api_key_row"]["id"], "key": result["api_key"],
                        "scopes": result["api_key_row"]["scopes"].split()}}
    _emit(data, as_json, f"created {mailbox['email']}\n  password: {result['password']}\n"
                         f"  API key:  {result['api_key']} (shown once)")


@mailbox_app.command("list")
def mailbox_list(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                 as_json: JsonOpt = False) -> None:
    """List mailboxes."""
    from .core import accounts as core
    from .store import accounts

    settings = _settings(config, dev, set_)
    rows = [core.public_mailbox(r) for r in _db(settings).read(accounts.list_mailboxes)]
    _emit(rows, as_json, _table(["email", "quota", "used", "active", "created"],
                                [[r["email"], r["quota"] or "unlimited", r["used_bytes"], r["active"],
                                  r["created_at"]] for r in rows]))


@mailbox_app.command("delete")
def mailbox_delete(address: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
                   config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Delete a mailbox from the index (its Maildir stays on disk)."""
    from .core import accounts as core

    settings = _settings(config, dev, set_)
    if not yes and not as_json and not typer.confirm(f"Delete mailbox {address}?"):
        raise typer.Exit(1)
    try:
        row = core.delete_mailbox(settings, _db(settings), address)
    except MailError as exc:
        _fail(exc, as_json)
    _emit({"deleted": row["address"]}, as_json, f"deleted {row['address']}")


@mailbox_app.command("passwd")
def mailbox_passwd(address: str, password: Annotated[Optional[str], typer.Option(
                       help="New password; generated when omitted.")] = None,
                   config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Set a mailbox password."""
    from .core import accounts as core

    settings = _settings(config, dev, set_)
    try:
        row, new = core.set_password(_db(settings), address, password)
    except MailError as exc:
        _fail(exc, as_json)
    _emit({"email": row["address"], "password": new}, as_json, f"password of {row['address']}: {new}")


# ---- aliases ---------------------------------------------------------------

@alias_app.command("add")
def alias_add(source: str, destination: str, config: ConfigOpt = None, dev: DevOpt = False,
              set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Create an alias SOURCE (an address, or @domain for a catch-all) -> DESTINATION[,...]."""
    from .core import accounts as core

    settings = _settings(config, dev, set_)
    try:
        row = core.create_alias(_db(settings), source, destination)
    except MailError as exc:
        _fail(exc, as_json)
    _emit(row, as_json, f"alias {row['source']} -> {row['destination']}")


@alias_app.command("list")
def alias_list(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
               as_json: JsonOpt = False) -> None:
    """List aliases."""
    from .store import accounts

    rows = _db(_settings(config, dev, set_)).read(accounts.list_aliases)
    _emit(rows, as_json, _table(["source", "destination", "created"],
                                [[r["source"], r["destination"], r["created_at"]] for r in rows]))


@alias_app.command("delete")
def alias_delete(source: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Delete an alias."""
    from .core import accounts as core

    try:
        core.delete_alias(_db(_settings(config, dev, set_)), source)
    except MailError as exc:
        _fail(exc, as_json)
    _emit({"deleted": source}, as_json, f"deleted alias {source}")


# ---- API keys --------------------------------------------------------------

@key_app.command("create")
def key_create(mailbox: Annotated[Optional[str], typer.Option(
                   help="Mailbox address for a mailbox-scoped key; omit for an admin key.")] = None,
               name: Annotated[str, typer.Option(help="A label for the key.")] = "",
               config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
               as_json: JsonOpt = False) -> None:
    """Create an API key (shown once)."""
    from .core import accounts as core

    db = _db(_settings(config, dev, set_))
    try:
        if mailbox:
            key, row = core.create_mailbox_key(db, mailbox, name)
        else:
            key, row = core.create_key(db, mailbox_id=None, name=name or "admin (cli)")
    except MailError as exc:
        _fail(exc, as_json)
    _emit({**core.public_key(row), "key": key}, as_json,
          f"key {row['id']} ({' '.join(row['scopes'].split())}):\n  {key}\n(shown once)")


@key_app.command("list")
def key_list(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
             as_json: JsonOpt = False) -> None:
    """List API keys (prefixes only)."""
    from .core import accounts as core
    from .store import accounts

    rows = [core.public_key(r) for r in _db(_settings(config, dev, set_)).read(accounts.list_keys)]
    _emit(rows, as_json, _table(["id", "prefix", "mailbox", "scopes", "created", "revoked"],
                                [[r["id"], r["prefix"] + "…", r["mailbox"] or "(admin)", " ".join(r["scopes"]),
                                  r["created_at"], r["revoked_at"] or ""] for r in rows]))


@key_app.command("revoke")
def key_revoke(key_id: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
               as_json: JsonOpt = False) -> None:
    """Revoke an API key by id."""
    from .core import accounts as core

    try:
        settings = _settings(config, dev, set_)
        core.revoke_key(settings, _db(settings), key_id)
    except MailError as exc:
        _fail(exc, as_json)
    _emit({"revoked": key_id}, as_json, f"revoked {key_id}")


# ---- queue -----------------------------------------------------------------

@queue_app.command("list")
def queue_list(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Recipients waiting in (or passed through) the queue, newest first."""
    from .store import queue

    rows = _db(_settings(config, dev, set_)).read(queue.list_queue)
    _emit(rows, as_json, _table(["id", "state", "recipient", "attempts", "sender", "last error"],
                                [[r["id"], r["state"], r["recipient"], r["attempts"], r["sender"] or "<>",
                                  r["last_error"] or ""] for r in rows]))


@queue_app.command("show")
def queue_show(ident: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
               as_json: JsonOpt = False) -> None:
    """One queued message: its recipients and every delivery attempt."""
    from .core import queue as core_queue

    try:
        data = core_queue.show(_db(_settings(config, dev, set_)), ident)
    except MailError as exc:
        _fail(exc, as_json)
    human = _table(["time", "recipient", "outcome", "mx", "ip", "tls", "reply"],
                   [[a["attempted_at"], a["recipient"], a["outcome"], a["mx_host"], a["ip"], a["tls"],
                     f"{a['code']} {a['response']}"] for a in data["attempts"]])
    human.title = f"{data['id']} ({data['queue_id']}) from <{data['sender']}>: {data['state']}"
    _emit(data, as_json, human)


def _queue_action(action: str, ident: str, config, dev, set_, as_json) -> None:
    from .core import queue as core_queue

    settings = _settings(config, dev, set_)
    db = _db(settings)
    try:
        data = core_queue.delete(settings, db, ident) if action == "delete" else getattr(core_queue, action)(db, ident)
    except MailError as exc:
        _fail(exc, as_json)
    _emit(data, as_json, f"{action}: {data['id']} is now {data['state']}")


def _queue_command(action: str, summary: str) -> None:
    def command(ident: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                as_json: JsonOpt = False) -> None:
        _queue_action(action, ident, config, dev, set_, as_json)

    command.__name__ = f"queue_{action}"
    queue_app.command(action, help=summary)(command)


for _action, _summary in (
        ("retry", "Attempt delivery now."),
        ("hold", "Stop delivery attempts until released."),
        ("release", "Release a held message for delivery now."),
        ("delete", "Remove a message's undelivered recipients from the queue (no bounce)."),
):
    _queue_command(_action, _summary)


# ---- backups -----------------------------------------------------------------

@backup_app.command("create")
def backup_create(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Write an encrypted snapshot into data_dir/backups (safe while the daemon runs)."""
    from .ops import backup

    settings = _settings(config, dev, set_)
    try:
        with _progress("backing up", not as_json) as progress:
            result = backup.create(settings, progress)
    except MailError as exc:
        _fail(exc, as_json)
    _emit(result, as_json, f"backup written: {result['path']} ({result['size']} bytes, {result['files']} files)")


@backup_app.command("verify")
def backup_verify(path: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Decrypt a backup and check every file against its manifest."""
    from .ops import backup

    try:
        with _progress("verifying", not as_json) as progress:
            result = backup.validate(_settings(config, dev, set_), path, progress)
    except MailError as exc:
        _fail(exc, as_json)
    _emit(result, as_json, f"{result['status']}: " + ", ".join(f"{k}={v}" for k, v in result["details"].items()))
    if result["status"] != "ok":
        raise typer.Exit(1)


@backup_app.command("list")
def backup_list(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                as_json: JsonOpt = False) -> None:
    """Backups in data_dir/backups, newest first."""
    from .ops import backup

    rows = backup.list_backups(_settings(config, dev, set_))
    _emit(rows, as_json, _table(["name", "size", "created"], [[r["name"], r["size"], r["created_at"]] for r in rows]))


@app.command()
def restore(path: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
            as_json: JsonOpt = False) -> None:
    """Restore a backup into an empty data_dir (refused while a daemon serves it)."""
    from .ops import backup
    from .ops.pidfile import running_pid

    settings = _settings(config, dev, set_)
    if running_pid(settings):
        _fail(MailError(ErrorCode.DAEMON_RUNNING, f"a daemon serves {settings.data_dir}; stop it first"), as_json)
    try:
        with _progress("restoring", not as_json) as progress:
            result = backup.restore(settings, path, progress)
    except MailError as exc:
        _fail(exc, as_json)
    _emit(result, as_json, f"restored {result['files']} files into {result['data_dir']}")


# ---- domains ---------------------------------------------------------------

def _domain_view(settings: Settings, row: dict) -> dict:
    from .core import domains

    return {"name": row["name"], "id": row["id"], "status": domains.status(row), "verified_at": row["verified_at"],
            "dkim_selector": row["dkim_selector"], "records": domains.records(settings, row)}


def _records_table(view: dict) -> Table:
    table = _table(["record", "name", "value", "status"],
                   [[r["type"], r["name"], r["value"] if len(r["value"]) < 60 else r["value"][:57] + "...",
                     r["status"]] for r in view["records"]])
    table.title = f"{view['name']}: {view['status']}"
    return table


def _show_domain(fetch: Callable[[Any, str], dict], name: str, config: Optional[str], dev: bool,
                 set_: Optional[list[str]], as_json: bool) -> None:
    """`fetch(db, name)` (add or get) and show the domain's records."""
    settings = _settings(config, dev, set_)
    try:
        view = _domain_view(settings, fetch(_db(settings), name))
    except MailError as exc:
        _fail(exc, as_json)
    _emit(view, as_json, _records_table(view))


@domain_app.command("add")
def domain_add(name: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
               as_json: JsonOpt = False) -> None:
    """Host a domain: creates its DKIM key and shows the records to publish."""
    from .core import domains

    _show_domain(domains.add, name, config, dev, set_, as_json)


@domain_app.command("list")
def domain_list(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Domains this server hosts."""
    from .core import domains
    from .store import accounts

    settings = _settings(config, dev, set_)
    rows = _db(settings).read(accounts.list_domains)
    _emit([_domain_view(settings, r) for r in rows], as_json,
          _table(["domain", "status", "verified", "DKIM selector"],
                 [[r["name"], domains.status(r), r["verified_at"] or "", r["dkim_selector"]] for r in rows]))


@domain_app.command("show")
def domain_show(name: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                as_json: JsonOpt = False) -> None:
    """A domain's records and the result of their last check."""
    from .core import domains

    _show_domain(domains.get, name, config, dev, set_, as_json)


@domain_app.command("verify")
def domain_verify(name: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Check the domain's records live in DNS; VERIFIED when all of them are right (exit 1 otherwise)."""
    from .core import domains
    from .dns.resolver import install

    settings = _settings(config, dev, set_)
    install(settings)
    try:
        row, _ = domains.verify(settings, _db(settings), name)
    except MailError as exc:
        _fail(exc, as_json)
    view = _domain_view(settings, row)
    _emit(view, as_json, _records_table(view))
    if view["status"] != domains.VERIFIED:
        raise typer.Exit(1)


@domain_app.command("delete")
def domain_delete(name: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Stop hosting a domain (it must have no mailboxes or aliases left)."""
    from .core import domains

    settings = _settings(config, dev, set_)
    try:
        row = domains.delete(settings, _db(settings), name)
    except MailError as exc:
        _fail(exc, as_json)
    _emit({"deleted": row["name"]}, as_json, f"deleted domain {row['name']}")


@dns_app.command("plan")
def dns_plan(domain: str, config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None) -> None:
    """The BIND zone snippet with every record DOMAIN needs (MX, SPF, DKIM, DMARC)."""
    from .core import domains

    settings = _settings(config, dev, set_)
    try:
        row = domains.get(_db(settings), domain)
    except MailError as exc:
        exc.fix = exc.fix or f"host it first: openmailserver domain add {domain}"
        _fail(exc, False)
    sys.stdout.write(domains.zone(settings, row))


# ---- operations ----------------------------------------------------------------

@app.command()
def doctor(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Health and deliverability checks with the fix for each (exit 1 when any fails)."""
    from .ops import doctor as checks

    findings = checks.run(_settings(config, dev, set_))
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}
    human = _table(["check", "status", "detail", "fix"],
                   [[f.check, f"[{colour[f.status]}]{f.status}[/]", f.detail, f.fix] for f in findings])
    _emit(checks.as_dicts(findings), as_json, human)
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(1)


@app.command()
def reindex(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Reconcile Maildir and index: adopt unindexed files, drop rows whose file is gone (daemon stopped)."""
    from .ops.pidfile import running_pid
    from .store.reconcile import reconcile

    settings = _settings(config, dev, set_)
    if running_pid(settings):
        _fail(MailError(ErrorCode.DAEMON_RUNNING, f"a daemon serves {settings.data_dir}; it reindexes at start-up, "
                        "or stop it first"), as_json)
    report = reconcile(_db(settings), settings.mail_root)
    data = {"adopted": report.adopted, "dropped": report.dropped, "renamed": report.renamed,
            "tmp_removed": report.tmp_removed, "incomplete_removed": report.incomplete_removed}
    _emit(data, as_json, ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in data.items()))


@app.command()
def send(sender: Annotated[str, typer.Option("--from", help="A mailbox (or its alias) on this server.")],
         to: Annotated[list[str], typer.Option("--to", help="Recipient (repeatable).")],
         subject: Annotated[str, typer.Option(help="Subject line.")] = "openmailserver test message",
         body: Annotated[str, typer.Option(help="Text body.")] = "This is a test message from openmailserver.",
         config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Send a test message through the queue (the running daemon delivers remote recipients)."""
    import asyncio

    from .core.testmail import send_test

    settings = _settings(config, dev, set_)
    try:
        record = asyncio.run(send_test(settings, sender, to, subject, body))
    except MailError as exc:
        _fail(exc, as_json)
    _emit(record, as_json, f"queued {record['queue_id']} ({record['state']}): openmailserver queue show "
                           f"{record['id']}")


@app.command()
def logs(level: Annotated[str, typer.Option(help="Lowest level shown.")] = "info",
         lines: Annotated[int, typer.Option("--lines", "-n", help="How many recent entries.")] = 50,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new entries.")] = False,
         config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Show the daemon's log (JSON lines in data_dir/logs)."""
    import time

    from .telemetry.logs import LEVELS, LOG_FILE, read_entries

    settings = _settings(config, dev, set_)
    if level not in LEVELS:
        _fail(MailError(ErrorCode.INVALID_LEVEL, f"level must be one of {', '.join(LEVELS)}"), as_json)
    path = settings.log_dir / LOG_FILE

    def show(entries) -> None:
        for entry in entries:
            if as_json:
                print(json.dumps(entry), flush=True)
            else:
                out.print(f"{entry.get('time')} {entry.get('level', '?'):<7} {entry.get('logger')} "
                          f"[{entry.get('session')}] {entry.get('message')}", highlight=False, markup=False)

    entries, offset = read_entries(path, LEVELS[level], lines)
    show(entries)
    while follow:
        time.sleep(0.5)
        entries, offset = read_entries(path, LEVELS[level], None, offset)
        show(entries)


# ---- agents ----------------------------------------------------------------

@app.command()
def skill(inbox: Annotated[str, typer.Option("--inbox", help="The inbox (mailbox) address the agent uses.")],
          base_url: Annotated[Optional[str], typer.Option(
              "--base-url", help="API base URL agents reach (default: the public_api_url setting, "
                                 "else http://api_host:api_port).")] = None,
          config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None) -> None:
    """Print a SKILL.md that teaches an AI agent to mail through this server as INBOX."""
    from .api.skill import render
    from .core import accounts as core

    settings = _settings(config, dev, set_)
    try:
        mailbox = core.get_mailbox(_db(settings), inbox)
    except MailError as exc:
        _fail(exc, False)
    sys.stdout.write(render(base_url=base_url or settings.api_base_url, address=mailbox["address"],
                            inbox_id=mailbox["id"]))


# ---- settings --------------------------------------------------------------

@config_app.command("show")
def config_show(config: ConfigOpt = None, dev: DevOpt = False, set_: SetOpt = None) -> None:
    """Print the effective settings (secrets redacted) as JSON."""
    print(json.dumps(_settings(config, dev, set_).redacted(), indent=2))


@docs_app.command("configuration")
def docs_configuration() -> None:
    """Print docs/configuration.md, generated from the settings."""
    sys.stdout.write(render_reference())


@docs_app.command("api")
def docs_api() -> None:
    """Print docs/api.md, generated from the OpenAPI document."""
    from .api.openapi import render_markdown

    sys.stdout.write(render_markdown())


def main() -> None:
    app()
