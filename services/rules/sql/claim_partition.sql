-- Takes a partition over: raises its fencing epoch (creating the row on first use)
-- and returns the new epoch with the stored arrival frontiers.
INSERT INTO rules.partitions AS p (consumer_group, partition, epoch, owner)
VALUES ($1, $2, 1, $3)
ON CONFLICT (consumer_group, partition)
DO UPDATE SET epoch = p.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
RETURNING epoch, arrival
