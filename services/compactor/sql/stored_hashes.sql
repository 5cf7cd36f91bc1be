-- Content hashes of already stored events of relation $1, for the keys given.
SELECT k.tenant_id, k.store_id, k.event_id, k.content_hash
FROM event_keys k
JOIN unnest($2::text[], $3::text[], $4::uuid[]) AS u(tenant_id, store_id, event_id)
  USING (tenant_id, store_id, event_id)
WHERE k.relation = $1
