-- Each session's fence: the ring epoch of its current owner. Appends read it
-- with a shared lock in their transaction and are refused if they are older;
-- a claim raises it. A session with no row is at epoch 1, the first.
CREATE TABLE IF NOT EXISTS session_epochs (
    uid   VARBINARY(128)  NOT NULL PRIMARY KEY,
    epoch BIGINT UNSIGNED NOT NULL
) ENGINE = InnoDB;
