-- The stores' evaluation state is rewritten by every batch that touches the store
-- (about 12 kB of JSON for a store of 10 freezers), so its TOAST compression is on
-- the rules' hot path: with PostgreSQL's default (pglz) it was the largest single
-- cost of a checkpoint in the end-to-end benchmark (`cargo bench --bench rules_e2e`).
-- LZ4 compresses several times faster. It needs PostgreSQL 14 or later built with
-- lz4 (Debian's and the TimescaleDB images are); without it the column stays as it
-- was. Only values written from now on use it; nothing is rewritten here.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE rules.store_state ALTER COLUMN state SET COMPRESSION lz4';
EXCEPTION
    WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
        RAISE NOTICE 'rules.store_state keeps the default compression: %', SQLERRM;
END
$$;
