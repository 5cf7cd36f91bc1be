-- Acknowledgements: someone has taken an alert in hand. An acknowledged alert is
-- neither repeated nor escalated further; the first acknowledgement is kept.
CREATE TABLE notifier.acks (
    alert_id  text        PRIMARY KEY,
    acked_by  text        NOT NULL,
    comment   text        NOT NULL DEFAULT '',
    acked_at  timestamptz NOT NULL DEFAULT now()
);
