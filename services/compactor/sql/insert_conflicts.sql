INSERT INTO event_id_conflicts (topic, partition, "offset", tenant_id, store_id, event_id,
                                relation, stored_hash, conflicting_hash)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::uuid[],
                     $7::text[], $8::bytea[], $9::bytea[])
ON CONFLICT (topic, partition, "offset") DO NOTHING
