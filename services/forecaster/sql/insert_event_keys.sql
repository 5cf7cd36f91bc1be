-- Records the batch's event keys; returns the positions (1-based) of those new.
WITH k AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(tenant_id, store_id, event_id, pos)
), ins AS (
    INSERT INTO forecaster.event_keys (tenant_id, store_id, event_id)
    SELECT DISTINCT ON (tenant_id, store_id, event_id) tenant_id, store_id, event_id FROM k ORDER BY tenant_id, store_id, event_id, pos
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
)
SELECT min(k.pos) FROM k JOIN ins USING (tenant_id, store_id, event_id)
GROUP BY k.tenant_id, k.store_id, k.event_id
