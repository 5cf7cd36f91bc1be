-- Content hashes of already stored events, for the keys given ({relation} is one of
-- the compactor's event tables, substituted from a constant).
SELECT t.tenant_id, t.store_id, t.event_id, t.content_hash
FROM {relation} t
JOIN unnest($1::text[], $2::text[], $3::uuid[]) AS k(tenant_id, store_id, event_id)
  USING (tenant_id, store_id, event_id)
