"""Versioned schema migrations. Append new entries; never edit a released one.

`PRAGMA user_version` records how many have been applied. Statements stay
portable SQL so a PostgreSQL backend can follow.
"""

MIGRATIONS: list[str] = [
    # 1: accounts, keys, folders, message index, threads, events.
    """
    CREATE TABLE domains (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        dkim_selector TEXT NOT NULL,
        dkim_private_key TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        verified_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE mailboxes (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL UNIQUE,
        local_part TEXT NOT NULL,
        domain_id TEXT NOT NULL REFERENCES domains(id),
        password_hash TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        quota_bytes INTEGER NOT NULL DEFAULT 0,
        used_bytes INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    CREATE TABLE aliases (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        destination TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        mailbox_id TEXT REFERENCES mailboxes(id) ON DELETE CASCADE,
        scopes TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT,
        last_used_at TEXT
    );
    CREATE TABLE folders (
        id INTEGER PRIMARY KEY,
        mailbox_id TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL DEFAULT 1,
        highestmodseq INTEGER NOT NULL DEFAULT 1,
        special_use TEXT,
        subscribed INTEGER NOT NULL DEFAULT 1,
        UNIQUE (mailbox_id, name)
    );
    CREATE TABLE threads (
        id TEXT PRIMARY KEY,
        mailbox_id TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        subject TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        last_message_at TEXT NOT NULL,
        message_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX threads_mailbox ON threads (mailbox_id, last_message_at);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        mailbox_id TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL,
        flags TEXT NOT NULL DEFAULT '',
        internal_date TEXT NOT NULL,
        message_id TEXT,
        in_reply_to TEXT,
        refs TEXT,
        subject TEXT NOT NULL DEFAULT '',
        from_addr TEXT NOT NULL DEFAULT '',
        to_addrs TEXT NOT NULL DEFAULT '',
        date_header TEXT,
        thread_id TEXT REFERENCES threads(id) ON DELETE SET NULL,
        direction TEXT NOT NULL DEFAULT 'inbound',
        envelope_from TEXT,
        subaddress TEXT,
        auth_results TEXT,
        spf TEXT,
        dkim TEXT,
        dmarc TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (folder_id, uid)
    );
    CREATE INDEX messages_mailbox ON messages (mailbox_id, created_at);
    CREATE INDEX messages_msgid ON messages (mailbox_id, message_id);
    CREATE INDEX messages_thread ON messages (thread_id);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        mailbox_id TEXT,
        payload TEXT NOT NULL
    );
    CREATE INDEX events_mailbox ON events (mailbox_id, seq)
    """,
]
