-- One inventory change: a snapshot newer than the standing one replaces it (and the
-- adjustments counted after the old one); an adjustment after the standing snapshot
-- (or with none yet) is added; older ones change nothing.
-- $4 snapshot? $5 quantity $6 occurred_at
INSERT INTO forecaster.stock AS s (tenant_id, store_id, sku, snapshot_quantity, snapshot_at, adjustments_since, last_change_at)
VALUES ($1, $2, $3,
        CASE WHEN $4 THEN $5::double precision END,
        CASE WHEN $4 THEN $6::timestamptz END,
        CASE WHEN $4 THEN 0 ELSE $5::double precision END,
        $6)
ON CONFLICT (tenant_id, store_id, sku) DO UPDATE SET
    snapshot_quantity = CASE WHEN $4 AND (s.snapshot_at IS NULL OR $6 > s.snapshot_at) THEN $5 ELSE s.snapshot_quantity END,
    adjustments_since = CASE
        WHEN $4 AND (s.snapshot_at IS NULL OR $6 > s.snapshot_at) THEN 0
        WHEN NOT $4 AND (s.snapshot_at IS NULL OR $6 > s.snapshot_at) THEN s.adjustments_since + $5
        ELSE s.adjustments_since END,
    snapshot_at = CASE WHEN $4 AND (s.snapshot_at IS NULL OR $6 > s.snapshot_at) THEN $6 ELSE s.snapshot_at END,
    last_change_at = GREATEST(s.last_change_at, $6)
