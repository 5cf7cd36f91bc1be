-- Tenant isolation for analysts: each analyst role belongs to one tenant and sees only
-- that tenant's rows, by row-level security on every tenant-scoped relation. Roles
-- are created with `storepulse analysts create`. The table owner (the role that runs
-- migrations and the compactor) is not subject to these policies.

CREATE TABLE analyst_roles (
    role_name  text        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE analyst_roles IS
    'Analyst login roles and the one tenant each may read (storepulse analysts create/list/drop).';

-- The tenant of analyst role `role`; NULL (no rows) for any other role. The policies
-- pass `current_user`, evaluated in the querying role's context (inside this
-- SECURITY DEFINER function current_user would be the owner). SECURITY DEFINER so
-- analysts need no access to analyst_roles itself.
CREATE FUNCTION storepulse_analyst_tenant(role name) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$ SELECT tenant_id FROM public.analyst_roles WHERE role_name = role $$;
REVOKE ALL ON FUNCTION storepulse_analyst_tenant(name) FROM PUBLIC;

DO $$
DECLARE
    rel text;
BEGIN
    FOREACH rel IN ARRAY ARRAY[
        'sales', 'sale_lines', 'inventory_changes', 'pos_heartbeats', 'sensor_readings',
        'rejected_events', 'event_id_conflicts', 'sales_hourly', 'sales_daily',
        'sensor_stats_5m', 'sensor_stats_hourly', 'pos_uptime_daily'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', rel);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR SELECT USING (tenant_id = storepulse_analyst_tenant(current_user))',
            rel);
    END LOOP;
END $$;
