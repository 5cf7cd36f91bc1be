-- Every store's evaluation state of one partition.
SELECT state::text FROM rules.store_state
WHERE consumer_group = $1 AND partition = $2
