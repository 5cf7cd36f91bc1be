-- Both flavours: stock_on_hand of every store/sku the inventory changes inserted by the
-- same statement touch (CTE ins of insert_inventory.sql, which this text continues).
-- The writer holds the store's lock (lock_stores.sql) before the statement starts, so
-- the stored rows it reads are every earlier change of the store.
--
-- on_hand = quantity of the standing snapshot + Σ adjustments with occurred_at after it
-- (no snapshot: Σ every adjustment). The standing snapshot is the one with the greatest
-- (occurred_at, event_id); an adjustment at the snapshot's very time is counted in it.
-- A new standing snapshot from this batch: Σ of the stored and the batch's adjustments
-- after it. Otherwise the batch's adjustments after the standing snapshot are added.
, touched AS (
    SELECT tenant_id, store_id, sku, count(*) AS changes, max(occurred_at) AS last_change_at
    FROM ins
    GROUP BY tenant_id, store_id, sku
), newest AS (
    SELECT DISTINCT ON (tenant_id, store_id, sku)
           tenant_id, store_id, sku, occurred_at, event_id, quantity::numeric AS quantity
    FROM ins
    WHERE kind = 'snapshot'
    ORDER BY tenant_id, store_id, sku, occurred_at DESC, event_id DESC
), cur AS (
    SELECT t.tenant_id, t.store_id, t.sku, t.changes, t.last_change_at,
           s.snapshot_at, s.snapshot_event_id, s.snapshot_quantity, s.adjustments_since,
           s.changes AS stored_changes, s.last_change_at AS stored_last_change_at,
           n.occurred_at AS new_at, n.event_id AS new_event_id, n.quantity AS new_quantity,
           n.event_id IS NOT NULL
               AND (s.snapshot_at IS NULL
                    OR (n.occurred_at, n.event_id) > (s.snapshot_at, s.snapshot_event_id))
               AS replaced
    FROM touched t
    LEFT JOIN stock_on_hand s USING (tenant_id, store_id, sku)
    LEFT JOIN newest n USING (tenant_id, store_id, sku)
), batch_after AS (
    -- the batch's adjustments after the snapshot that stands after it
    SELECT c.tenant_id, c.store_id, c.sku, sum(i.quantity::numeric) AS quantity
    FROM cur c
    JOIN ins i USING (tenant_id, store_id, sku)
    WHERE i.kind = 'adjustment'
      AND CASE WHEN c.replaced THEN i.occurred_at > c.new_at
               ELSE c.snapshot_at IS NULL OR i.occurred_at > c.snapshot_at END
    GROUP BY c.tenant_id, c.store_id, c.sku
), stock AS (
    INSERT INTO stock_on_hand AS st (tenant_id, store_id, sku, snapshot_quantity, snapshot_at,
                                     snapshot_event_id, adjustments_since, changes,
                                     last_change_at)
    SELECT c.tenant_id, c.store_id, c.sku,
           CASE WHEN c.replaced THEN c.new_quantity ELSE c.snapshot_quantity END,
           CASE WHEN c.replaced THEN c.new_at ELSE c.snapshot_at END,
           CASE WHEN c.replaced THEN c.new_event_id ELSE c.snapshot_event_id END,
           coalesce(b.quantity, 0) + CASE
               WHEN c.replaced THEN coalesce((
                   SELECT sum(a.quantity::numeric)
                   FROM inventory_changes a
                   WHERE a.tenant_id = c.tenant_id AND a.store_id = c.store_id
                     AND a.sku = c.sku AND a.kind = 'adjustment'
                     AND a.occurred_at > c.new_at), 0)
               ELSE coalesce(c.adjustments_since, 0) END,
           coalesce(c.stored_changes, 0) + c.changes,
           GREATEST(c.stored_last_change_at, c.last_change_at)
    FROM cur c
    LEFT JOIN batch_after b USING (tenant_id, store_id, sku)
    ON CONFLICT (tenant_id, store_id, sku) DO UPDATE SET
        snapshot_quantity = EXCLUDED.snapshot_quantity,
        snapshot_at       = EXCLUDED.snapshot_at,
        snapshot_event_id = EXCLUDED.snapshot_event_id,
        adjustments_since = EXCLUDED.adjustments_since,
        changes           = EXCLUDED.changes,
        last_change_at    = EXCLUDED.last_change_at
)
