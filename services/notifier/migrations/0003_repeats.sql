-- Repeats: a receiver's delivered firing notifications, newest first per alert, are
-- scanned for alerts still firing after the route's repeat_interval.
CREATE INDEX deliveries_delivered_firing ON notifier.deliveries (receiver, alert_id, finished_at DESC)
    WHERE alert_state = 'firing' AND status = 'delivered';
