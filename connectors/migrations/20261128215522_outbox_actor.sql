-- Who caused each change (the CloudEvents auth context: `{"kind": authtype, "id": authid}`),
-- published by the relay as the `authtype` and `authid` extensions. Nullable: rows written
-- before this migration, or by an engine of the previous release during a rolling upgrade,
-- have none and are published without them.
ALTER TABLE outbox ADD COLUMN actor JSONB;
