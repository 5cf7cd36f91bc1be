-- Epochs of the partitions a batch writes, locked until it commits (fencing).
SELECT partition, epoch FROM rules.partitions
WHERE consumer_group = $1 AND partition = ANY($2::int[])
FOR UPDATE
