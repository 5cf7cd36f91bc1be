-- Silences managed from the CLI (`storepulse silence add/list/expire`).
CREATE TABLE notifier.silences (
    id         uuid        PRIMARY KEY,
    matchers   text[]      NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    created_by text        NOT NULL,
    comment    text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_ends_at ON notifier.silences (ends_at);

-- Firing alerts (for inhibition): transitions by alert.
CREATE INDEX deliveries_alert ON notifier.deliveries (alert_id, alert_state);
