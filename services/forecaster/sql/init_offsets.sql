-- Offset rows of a batch's partitions exist (at 0 when new), so they can be locked.
INSERT INTO forecaster.offsets (consumer_group, topic, partition, next_offset)
SELECT $1, k.topic, k.partition, 0
FROM unnest($2::text[], $3::int[]) AS k(topic, partition)
ON CONFLICT DO NOTHING
