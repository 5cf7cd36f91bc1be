-- Stored next offsets of the batch's partitions, locked until the batch commits.
SELECT o.topic, o.partition, o.next_offset
FROM forecaster.offsets o
JOIN unnest($2::text[], $3::int[]) AS k(topic, partition) USING (topic, partition)
WHERE o.consumer_group = $1
FOR UPDATE OF o
