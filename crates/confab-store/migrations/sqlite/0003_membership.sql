-- The cluster's member table (confab_core::membership::MemberTable as JSON), one
-- row, changed only by compare-and-set on `version`.
CREATE TABLE IF NOT EXISTS membership (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    body    TEXT    NOT NULL
);
