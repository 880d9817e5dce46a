-- Records store: teams, environments, namespace records and the transactional outbox.
-- Each record row keeps the full record as JSON in `doc` (the same shape the API serves) and
-- copies into columns only what queries filter, order or lock on.
-- Key columns use the "C" collation so that cursor pagination orders bytewise, like sled.

CREATE TABLE teams (
    slug             TEXT COLLATE "C" PRIMARY KEY,
    resource_version BIGINT NOT NULL CHECK (resource_version > 0),
    deleted_at       TIMESTAMPTZ,
    doc              JSONB NOT NULL
);

CREATE TABLE environments (
    name             TEXT COLLATE "C" PRIMARY KEY,
    resource_version BIGINT NOT NULL CHECK (resource_version > 0),
    doc              JSONB NOT NULL
);

-- Purging a team removes its namespace records with it.
CREATE TABLE namespace_records (
    team             TEXT COLLATE "C" NOT NULL REFERENCES teams (slug) ON DELETE CASCADE,
    environment      TEXT COLLATE "C" NOT NULL,
    name             TEXT COLLATE "C" NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('active', 'deleting')),
    resource_version BIGINT NOT NULL CHECK (resource_version > 0),
    doc              JSONB NOT NULL,
    PRIMARY KEY (team, environment),
    CONSTRAINT namespace_records_name_unique UNIQUE (name)
);

CREATE INDEX namespace_records_by_environment ON namespace_records (environment, team);

-- `seq` orders the outbox; `id` (a ULID) is the CloudEvent and JetStream message id.
CREATE TABLE outbox (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    subject    TEXT NOT NULL,
    data       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
