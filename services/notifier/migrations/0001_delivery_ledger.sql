-- The notifier's own tables (schema `notifier`), not the read store's.

-- One row per (alert transition, receiver): the delivery ledger. A row is written
-- (pending) before the transition's Kafka offset is committed, and marked
-- delivered/failed/suppressed once the outcome is known; a replayed transition
-- finds its row and is never sent again.
CREATE TABLE notifier.deliveries (
    transition_id     text        NOT NULL,   -- alert_id + ':' + state
    receiver          text        NOT NULL,
    alert_id          text        NOT NULL,
    alert_state       text        NOT NULL CHECK (alert_state IN ('firing', 'resolved')),
    tenant_id         text        NOT NULL,
    store_id          text        NOT NULL,
    route             text        NOT NULL,   -- path of the route that chose the receiver
    group_key         text        NOT NULL,
    alert             jsonb       NOT NULL,   -- the transition as messages show it
    received_at       timestamptz NOT NULL DEFAULT now(),
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed', 'suppressed')),
    message_id        uuid,                   -- the message (Idempotency-Key) carrying it, once chosen
    channel           text,
    attempts          integer     NOT NULL DEFAULT 0,
    error             text,
    finished_at       timestamptz,
    outcome_published boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (transition_id, receiver)
);
CREATE INDEX deliveries_pending ON notifier.deliveries (receiver, received_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_unpublished ON notifier.deliveries (receiver)
    WHERE status <> 'pending' AND NOT outcome_published;

-- Messages that failed on every channel after the last try.
CREATE TABLE notifier.dead_letters (
    message_id  uuid        PRIMARY KEY,
    receiver    text        NOT NULL,
    transitions text[]      NOT NULL,
    body        jsonb       NOT NULL,
    attempts    integer     NOT NULL,
    error       text        NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
