-- Next offsets of a batch's partitions; never moves back.
UPDATE forecaster.offsets o
SET next_offset = GREATEST(o.next_offset, k.next_offset), updated_at = now()
FROM unnest($2::text[], $3::int[], $4::bigint[]) AS k(topic, partition, next_offset)
WHERE o.consumer_group = $1 AND o.topic = k.topic AND o.partition = k.partition
