-- Each session's fence: the ring epoch of its current owner. A write from an
-- older epoch is refused. A session with no row is at epoch 1, the first.
CREATE TABLE IF NOT EXISTS session_epochs (
    uid   TEXT    NOT NULL PRIMARY KEY,
    epoch INTEGER NOT NULL
) WITHOUT ROWID;
