-- Every admin action: who (the token's sub), what, when, on which node, and
-- what came of it; listed by `confabctl audit list`. Appended, never changed.
CREATE TABLE IF NOT EXISTS admin_audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    who    TEXT    NOT NULL,
    node   TEXT    NOT NULL,
    action TEXT    NOT NULL,
    status INTEGER NOT NULL,
    result TEXT    NOT NULL
);
