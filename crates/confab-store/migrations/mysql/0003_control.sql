-- The dead-letter queue as the store uses it: `attempts` beside the reason, an
-- index on the waiting entries (`replayed_ms IS NULL`), and action names
-- compared byte for byte, as on the embedded store. `reason` is utf8mb4 on any
-- server default: it quotes what users said.
ALTER TABLE dead_letters
    ADD COLUMN attempts INT UNSIGNED NOT NULL DEFAULT 0,
    MODIFY kind VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    MODIFY reason TEXT CHARACTER SET utf8mb4 NOT NULL,
    ADD KEY waiting (replayed_ms);

-- Cluster-wide settings, each changed only by compare-and-set on `revision`.
-- Names are printable ASCII without spaces (checked by the store), compared
-- byte for byte.
CREATE TABLE IF NOT EXISTS settings (
    name     VARCHAR(128)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    revision BIGINT UNSIGNED NOT NULL,
    body     MEDIUMTEXT      CHARACTER SET utf8mb4 NOT NULL
) ENGINE = InnoDB;
