INSERT INTO notifier.dead_letters (message_id, receiver, transitions, body, attempts, error)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (message_id) DO NOTHING
