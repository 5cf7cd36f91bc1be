-- Next offsets of one partition number, on every topic.
SELECT topic, next_offset FROM rules.offsets
WHERE consumer_group = $1 AND partition = $2
