-- Actions that failed past their retries, with why; replayed by `confabctl dlq`.
-- An entry waits while `resolved_ms` is NULL. AUTOINCREMENT: an id is never
-- reused, so an operator's id always names the same entry.
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    args        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    resolved_ms INTEGER NULL,
    UNIQUE (uid, seq, action)
);

-- The queue itself: listing and counting read only the waiting entries.
CREATE INDEX IF NOT EXISTS dead_letters_waiting ON dead_letters (id) WHERE resolved_ms IS NULL;

-- Cluster-wide settings, each changed only by compare-and-set on `revision`.
CREATE TABLE IF NOT EXISTS settings (
    name     TEXT    NOT NULL PRIMARY KEY,
    revision INTEGER NOT NULL,
    body     TEXT    NOT NULL
) WITHOUT ROWID;
