-- The rules service's own state, in its own schema `rules` (not read-store data;
-- analysts get no access):
-- per partition of its consumer group, the owner's fencing epoch and the arrival
-- frontiers; per store, the evaluation state; the consumed offsets; and the outbox
-- of decided alert transitions not yet acknowledged by the broker. Written in one
-- transaction per batch, so state, offsets and decisions always agree
-- (docs/decisions/0012-rules-state-in-postgres.md).

CREATE TABLE rules.partitions (
    consumer_group text        NOT NULL,
    partition      integer     NOT NULL,
    -- Raised by every member that takes the partition over; a write carrying an
    -- older epoch is refused (the partition moved).
    epoch          bigint      NOT NULL DEFAULT 0,
    owner          text        NOT NULL DEFAULT '',
    -- Arrival frontier per source (µs), in the engine's source order.
    arrival        bigint[]    NOT NULL DEFAULT '{}',
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, partition)
);

CREATE TABLE rules.store_state (
    consumer_group text        NOT NULL,
    partition      integer     NOT NULL,
    tenant_id      text        NOT NULL,
    store_id       text        NOT NULL,
    state          jsonb       NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, partition, tenant_id, store_id)
);

CREATE TABLE rules.offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE rules.outbox (
    seq            bigserial   PRIMARY KEY,
    consumer_group text        NOT NULL,
    partition      integer     NOT NULL,
    event_id       text        NOT NULL,
    record_key     text        NOT NULL,
    payload        bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer_group, event_id)
);
CREATE INDEX outbox_partition ON rules.outbox (consumer_group, partition, seq);
