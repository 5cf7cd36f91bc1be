-- Transaction-scoped locks on the stores given, in a fixed order (no deadlock between
-- two writers): taken before a statement that reads a store's stored rows to keep a
-- current-state relation (stock_on_hand), so a concurrent writer of the same store (a
-- record produced without its store's key, a partition moving during a rebalance)
-- commits before this statement's snapshot is taken, or waits for this transaction.
SELECT count(pg_advisory_xact_lock(k))
FROM (
    SELECT DISTINCT hashtextextended('storepulse.store/' || tenant_id || '/' || store_id, 0) AS k
    FROM unnest($1::text[], $2::text[]) AS u(tenant_id, store_id)
    ORDER BY 1
) locks
