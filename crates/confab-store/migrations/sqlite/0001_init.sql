-- Every event of every session, appended and never changed.
--
-- A rowid table, so that appends land at the end of the table instead of
-- splitting pages all over it; (uid, seq) is enforced and served by its unique
-- index. Nothing reads events by time on the embedded store, so there is no
-- (uid, ts_ms) index to maintain here (MySQL has one).
CREATE TABLE IF NOT EXISTS events (
    id    INTEGER PRIMARY KEY,
    uid   TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    kind  TEXT    NOT NULL,
    body  TEXT    NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS events_uid_seq ON events (uid, seq);

-- The latest snapshot of each session; `body` is the signed snapshot codec's bytes.
CREATE TABLE IF NOT EXISTS snapshots (
    uid   TEXT    NOT NULL PRIMARY KEY,
    seq   INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    body  BLOB    NOT NULL
) WITHOUT ROWID;
