-- confab's system of record on MySQL/MariaDB.
--
-- Events live in 64 tables, events_00..events_63: a uid's events are all in
-- events_NN with NN = CRC32(uid) % 64 (IEEE CRC-32, the same as MySQL's CRC32()),
-- so `SELECT CRC32('alice') % 64` names alice's table. See docs/storage.md.

CREATE TABLE IF NOT EXISTS events_00 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_01 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_02 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_03 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_04 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_05 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_06 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_07 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_08 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_09 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_10 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_11 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_12 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_13 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_14 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_15 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_16 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_17 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_18 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_19 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_20 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_21 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_22 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_23 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_24 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_25 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_26 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_27 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_28 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_29 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_30 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_31 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_32 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_33 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_34 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_35 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_36 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_37 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_38 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_39 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_40 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_41 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_42 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_43 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_44 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_45 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_46 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_47 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_48 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_49 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_50 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_51 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_52 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_53 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_54 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_55 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_56 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_57 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_58 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_59 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_60 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_61 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_62 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS events_63 (
    uid   VARBINARY(128)  NOT NULL,
    seq   BIGINT UNSIGNED NOT NULL,
    ts_ms BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind  VARCHAR(32)     NOT NULL,
    body  MEDIUMBLOB      NOT NULL,
    PRIMARY KEY (uid, seq),
    KEY uid_ts (uid, ts_ms)
) ENGINE = InnoDB;

-- The latest snapshot per uid; `checksum` is its HMAC-SHA256 tag, kept beside
-- the body so that tampering can be audited in SQL.
CREATE TABLE IF NOT EXISTS snapshots (
    uid      VARBINARY(128)  NOT NULL PRIMARY KEY,
    seq      BIGINT UNSIGNED NOT NULL,
    ts_ms    BIGINT UNSIGNED NOT NULL,
    epoch    BIGINT UNSIGNED NOT NULL,
    body     MEDIUMBLOB      NOT NULL,
    checksum VARBINARY(32)   NOT NULL
) ENGINE = InnoDB;

-- Actions that failed past their retries, with why; replayed by `confabctl dlq`.
CREATE TABLE IF NOT EXISTS dead_letters (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uid         VARBINARY(128)  NOT NULL,
    seq         BIGINT UNSIGNED NOT NULL,
    kind        VARCHAR(64)     NOT NULL,
    reason      TEXT            NOT NULL,
    body        MEDIUMBLOB      NOT NULL,
    created_ms  BIGINT UNSIGNED NOT NULL,
    replayed_ms BIGINT UNSIGNED NULL,
    UNIQUE KEY uid_seq_kind (uid, seq, kind)
) ENGINE = InnoDB;
