-- Who wrote what, so that a checker can read from the store itself that the
-- fence held (docs/storage.md, docs/reliability.md):
--
-- - each event keeps `fence`, the epoch its session's fence held when the event
--   was written (0 for events written before this column), and `node`, the node
--   that wrote it ('' when unknown);
-- - each fence keeps `node`, the node whose claim raised it to its epoch.
ALTER TABLE events ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE session_epochs ADD COLUMN node TEXT NOT NULL DEFAULT '';
