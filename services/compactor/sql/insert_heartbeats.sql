-- POS heartbeats: key into event_keys first, the raw row only for keys inserted. CTE
-- ins holds the rows inserted; on plain PostgreSQL rollup_heartbeats.sql continues the
-- statement with the rollup increments (from ins only, so a retried, conflicting or
-- already applied event never adds to a rollup).
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::bool[], $9::text[], $10::text[], $11::text[],
                $12::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, terminal_id,
             app_up, printer, network, software_version, content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'pos_heartbeats', tenant_id, store_id, event_id, occurred_at, content_hash FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO pos_heartbeats (event_id, tenant_id, store_id, occurred_at, received_at, source,
                                terminal_id, app_up, printer, network, software_version,
                                content_hash)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source,
           s.terminal_id, s.app_up, s.printer, s.network, s.software_version, s.content_hash
    FROM src s JOIN k USING (tenant_id, store_id, event_id)
    RETURNING tenant_id, store_id, event_id, occurred_at, terminal_id, app_up, printer, network,
              software_version
)
