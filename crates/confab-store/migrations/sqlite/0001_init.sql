-- Every event of every session, appended and never changed.
CREATE TABLE IF NOT EXISTS events (
    uid   TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    kind  TEXT    NOT NULL,
    body  TEXT    NOT NULL,
    PRIMARY KEY (uid, seq)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS events_uid_ts ON events (uid, ts_ms);

-- The latest snapshot of each session; `body` is the signed snapshot codec's bytes.
CREATE TABLE IF NOT EXISTS snapshots (
    uid   TEXT    NOT NULL PRIMARY KEY,
    seq   INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    body  BLOB    NOT NULL
) WITHOUT ROWID;
