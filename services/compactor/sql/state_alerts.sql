-- Both flavours: alert_history, one row per incident (tenant_id, store_id, alert_id,
-- started_at), from the transitions inserted by the same statement (CTE ins of
-- insert_alert_transitions.sql, which this text continues). Every column combines
-- order-independently, so arrival order, batching and repeats cannot change it:
--   fired_at, resolved_at   earliest firing / resolved transition (LEAST)
--   ended_at                earliest ended_at a resolved transition reported (LEAST)
--   last_transition_at      latest transition (GREATEST)
--   severity                highest severity of any transition (info < warning < critical)
--   rule_id, subject, summary   of the first transition, by (occurred_at, event_id)
--   transitions             transitions counted (+)
, incident AS (
    SELECT tenant_id, store_id, alert_id, started_at,
           (array_agg(severity ORDER BY array_position(ARRAY['info', 'warning', 'critical'],
                                                        severity) DESC))[1] AS severity,
           min(occurred_at) FILTER (WHERE state = 'firing') AS fired_at,
           min(occurred_at) FILTER (WHERE state = 'resolved') AS resolved_at,
           min(ended_at) AS ended_at,
           max(occurred_at) AS last_transition_at,
           count(*) AS transitions
    FROM ins
    GROUP BY tenant_id, store_id, alert_id, started_at
), first_transition AS (
    SELECT DISTINCT ON (tenant_id, store_id, alert_id, started_at)
           tenant_id, store_id, alert_id, started_at, rule_id, subject, summary,
           occurred_at AS first_transition_at, event_id AS first_event_id
    FROM ins
    ORDER BY tenant_id, store_id, alert_id, started_at, occurred_at, event_id
), history AS (
    INSERT INTO alert_history AS h (tenant_id, store_id, alert_id, started_at, rule_id, subject,
                                    summary, severity, fired_at, resolved_at, ended_at,
                                    last_transition_at, transitions, first_transition_at,
                                    first_event_id)
    SELECT i.tenant_id, i.store_id, i.alert_id, i.started_at, f.rule_id, f.subject, f.summary,
           i.severity, i.fired_at, i.resolved_at, i.ended_at, i.last_transition_at,
           i.transitions, f.first_transition_at, f.first_event_id
    FROM incident i
    JOIN first_transition f USING (tenant_id, store_id, alert_id, started_at)
    ON CONFLICT (tenant_id, store_id, alert_id, started_at) DO UPDATE SET
        rule_id  = CASE WHEN (EXCLUDED.first_transition_at, EXCLUDED.first_event_id)
                             < (h.first_transition_at, h.first_event_id)
                        THEN EXCLUDED.rule_id ELSE h.rule_id END,
        subject  = CASE WHEN (EXCLUDED.first_transition_at, EXCLUDED.first_event_id)
                             < (h.first_transition_at, h.first_event_id)
                        THEN EXCLUDED.subject ELSE h.subject END,
        summary  = CASE WHEN (EXCLUDED.first_transition_at, EXCLUDED.first_event_id)
                             < (h.first_transition_at, h.first_event_id)
                        THEN EXCLUDED.summary ELSE h.summary END,
        first_event_id = CASE WHEN (EXCLUDED.first_transition_at, EXCLUDED.first_event_id)
                                   < (h.first_transition_at, h.first_event_id)
                              THEN EXCLUDED.first_event_id ELSE h.first_event_id END,
        first_transition_at = LEAST(h.first_transition_at, EXCLUDED.first_transition_at),
        severity = CASE WHEN array_position(ARRAY['info', 'warning', 'critical'], EXCLUDED.severity)
                             > array_position(ARRAY['info', 'warning', 'critical'], h.severity)
                        THEN EXCLUDED.severity ELSE h.severity END,
        fired_at           = LEAST(h.fired_at, EXCLUDED.fired_at),
        resolved_at        = LEAST(h.resolved_at, EXCLUDED.resolved_at),
        ended_at           = LEAST(h.ended_at, EXCLUDED.ended_at),
        last_transition_at = GREATEST(h.last_transition_at, EXCLUDED.last_transition_at),
        transitions        = h.transitions + EXCLUDED.transitions
)
