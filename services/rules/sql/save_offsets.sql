-- Next offsets of a batch's partitions; never moves back.
INSERT INTO rules.offsets AS o (consumer_group, topic, partition, next_offset, updated_at)
SELECT $1, k.topic, k.partition, k.next_offset, now()
FROM unnest($2::text[], $3::int[], $4::bigint[]) AS k(topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition)
DO UPDATE SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset),
              updated_at = now()
