-- Every admin action: who (the token's sub), what, when, on which node, and
-- what came of it; listed by `confabctl audit list`. Appended, never changed.
CREATE TABLE IF NOT EXISTS admin_audit (
    id     BIGINT UNSIGNED   NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ms  BIGINT UNSIGNED   NOT NULL,
    who    VARBINARY(128)    NOT NULL,
    node   VARBINARY(64)     NOT NULL,
    action VARBINARY(300)    NOT NULL,
    status SMALLINT UNSIGNED NOT NULL,
    result VARBINARY(300)    NOT NULL
) ENGINE = InnoDB;
