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
    # 2: the outbound queue: one `outbound` row per submitted message, one `queue`
    # row per remote recipient, and every delivery attempt.
    """
    CREATE TABLE outbound (
        id TEXT PRIMARY KEY,
        queue_id TEXT NOT NULL UNIQUE,
        mailbox_id TEXT REFERENCES mailboxes(id) ON DELETE SET NULL,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        message_id TEXT,
        subject TEXT NOT NULL DEFAULT '',
        thread_id TEXT,
        spool TEXT,
        size INTEGER NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        sent_copy_id TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX outbound_mailbox ON outbound (mailbox_id, created_at);
    CREATE TABLE queue (
        id TEXT PRIMARY KEY,
        outbound_id TEXT NOT NULL REFERENCES outbound(id) ON DELETE CASCADE,
        recipient TEXT NOT NULL,
        domain TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        last_code INTEGER,
        last_error TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX queue_due ON queue (state, next_attempt_at);
    CREATE INDEX queue_outbound ON queue (outbound_id);
    CREATE TABLE delivery_attempts (
        id INTEGER PRIMARY KEY,
        queue_row_id TEXT NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        outbound_id TEXT NOT NULL,
        attempted_at TEXT NOT NULL,
        mx_host TEXT,
        ip TEXT,
        tls TEXT,
        code INTEGER,
        response TEXT,
        outcome TEXT NOT NULL
    );
    CREATE INDEX attempts_outbound ON delivery_attempts (outbound_id, id)
    """,
    # 3: idempotency records of sending requests, written in the same transaction as the send.
    """
    CREATE TABLE idempotency (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        response TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_age ON idempotency (created_at)
    """,
    # 4: IMAP state. `first_recent_uid`: messages from this UID on are \Recent for the
    # next session that selects the folder (RFC 3501 §2.3.2); `keywords`: the keywords
    # defined in the folder (FLAGS response); `subscriptions`: subscribed names that
    # are not (or no longer) folders (RFC 3501 §6.3.6); `message_cache`: ENVELOPE,
    # BODYSTRUCTURE and header data computed once per message; `counters`: the highest
    # UIDVALIDITY ever handed out, so a recreated folder never reuses one.
    """
    ALTER TABLE folders ADD COLUMN first_recent_uid INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE folders ADD COLUMN keywords TEXT NOT NULL DEFAULT '';
    CREATE TABLE subscriptions (
        mailbox_id TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (mailbox_id, name)
    );
    CREATE INDEX messages_folder_modseq ON messages (folder_id, modseq);
    CREATE TABLE message_cache (
        message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        header BLOB,
        envelope BLOB,
        body BLOB,
        bodystructure BLOB
    );
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )
    """,
    # 5: webhooks. Deliveries are created from the event log behind a cursor
    # (`webhook_cursor`), in the same transaction that advances it, so no event is lost.
    """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        mailbox_id TEXT REFERENCES mailboxes(id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        event_types TEXT NOT NULL DEFAULT '',
        inbox_ids TEXT NOT NULL DEFAULT '',
        enabled INTEGER NOT NULL DEFAULT 1,
        secret TEXT NOT NULL,
        old_secret TEXT,
        old_secret_expires_at REAL,
        failing_since REAL,
        disabled_reason TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        event_seq INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        created_at TEXT NOT NULL,
        delivered_at TEXT
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
    CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at);
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        attempted_at TEXT NOT NULL,
        status INTEGER,
        error TEXT,
        duration_ms INTEGER
    );
    CREATE TABLE webhook_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL
    );
    INSERT INTO webhook_cursor (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events
    """,
    # 6: what the compatibility APIs (/v1/inboxes, /api/v0) keep about inboxes, domains
    # and webhooks: the caller's own ids, display data, domain verification results,
    # and server secrets (the key that signs expiring download URLs).
    """
    ALTER TABLE mailboxes ADD COLUMN external_id TEXT;
    ALTER TABLE mailboxes ADD COLUMN client_id TEXT;
    ALTER TABLE mailboxes ADD COLUMN updated_at TEXT;
    CREATE INDEX mailboxes_external_id ON mailboxes (external_id);
    ALTER TABLE domains ADD COLUMN feedback_enabled INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE domains ADD COLUMN dns_records TEXT;
    ALTER TABLE domains ADD COLUMN checked_at TEXT;
    ALTER TABLE domains ADD COLUMN updated_at TEXT;
    ALTER TABLE webhooks ADD COLUMN client_id TEXT;
    ALTER TABLE webhooks ADD COLUMN updated_at TEXT;
    CREATE TABLE server_secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    # 7: an index covering what IMAP SELECT reads (uid, modseq, flags), so opening a
    # large folder reads the index only, not every wide message row.
    """
    CREATE INDEX messages_folder_flags ON messages (folder_id, uid, modseq, flags)
    """,
    # 8: each folder's message count, kept by triggers on every insert, delete and move,
    # so an IMAP session learns of expunges without counting a large folder's rows.
    """
    ALTER TABLE folders ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0;
    UPDATE folders SET message_count = (SELECT COUNT(*) FROM messages m WHERE m.folder_id = folders.id);
    CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN UPDATE folders SET message_count = message_count + 1 WHERE id = NEW.folder_id; END;
    CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN UPDATE folders SET message_count = message_count - 1 WHERE id = OLD.folder_id; END;
    CREATE TRIGGER messages_count_move AFTER UPDATE OF folder_id ON messages WHEN NEW.folder_id != OLD.folder_id BEGIN UPDATE folders SET message_count = message_count - 1 WHERE id = OLD.folder_id; UPDATE folders SET message_count = message_count + 1 WHERE id = NEW.folder_id; END
    """,
    # 9: the MX's duplicate check compares content, not only the Message-ID (a digest of what
    # the sender controls, `mime.structure.content_digest`); each copy it suppressed is kept
    # for the original's delivery trace.
    """
    ALTER TABLE messages ADD COLUMN content_digest TEXT;
    CREATE TABLE suppressed_copies (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        suppressed_at TEXT NOT NULL,
        queue_id TEXT,
        envelope_from TEXT,
        peer_ip TEXT
    );
    CREATE INDEX suppressed_copies_message ON suppressed_copies (message_id)
    """,
    # 10: what must hold for the whole daemon, not for one worker process: leases on the
    # services that run once (`store.leases`), failed logins per client address
    # (`store.throttle`), and idempotency keys reserved before the request runs.
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE auth_failures (
        ip TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        window_start REAL NOT NULL,
        blocked_until REAL NOT NULL DEFAULT 0
    );
    ALTER TABLE idempotency ADD COLUMN state TEXT NOT NULL DEFAULT 'done';
    ALTER TABLE idempotency ADD COLUMN holder TEXT
    """,
]
