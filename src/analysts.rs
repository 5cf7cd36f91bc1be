//! Analyst roles: one Postgres login role per tenant, which sees only that tenant's
//! rows.
//!
//! Isolation is row-level security (migration 0006): every tenant-scoped table has a
//! policy `tenant_id = storepulse_analyst_tenant(current_user)`, the tenant recorded
//! for the querying role in `analyst_roles`. Views over such tables run with the
//! analyst's rights (`security_invoker`), so the policies apply. Where a relation
//! cannot carry row-level security — TimescaleDB's continuous aggregates, and its
//! compressed raw hypertables — the role reads a view of the same name that filters by
//! the same function: public views for the analyst relations, and views of the raw
//! relations in schema `storepulse_analyst`, which the role finds first on its
//! search_path (decision 0011). A role created here may read exactly those relations
//! plus the reference tables `sensor_limits` and `device_status_settings`; nothing
//! else (API keys, offsets, the raw hypertables themselves).

use deadpool_postgres::Pool;
use storepulse_runtime::db::describe;

/// Why an analyst-role command failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalystError {
    #[error(
        "role name {0:?} is not allowed: use 1-63 lower-case letters, digits and _, starting with a letter"
    )]
    BadRoleName(String),
    #[error("tenant must not be empty")]
    EmptyTenant,
    #[error("role {0:?} already exists")]
    Exists(String),
    #[error("{0:?} is not an analyst role created by storepulse")]
    NotAnalyst(String),
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// One analyst role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalystRole {
    pub role_name: String,
    pub tenant_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn check_role_name(name: &str) -> Result<(), AnalystError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AnalystError::BadRoleName(name.to_string()))
    }
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Creates login role `role` for `tenant` with `password`, granted SELECT on the
/// tenant-scoped relations, all in one transaction.
pub async fn create(
    pool: &Pool,
    tenant: &str,
    role: &str,
    password: &str,
) -> Result<(), AnalystError> {
    check_role_name(role)?;
    if tenant.trim().is_empty() {
        return Err(AnalystError::EmptyTenant);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let exists = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some();
    if exists {
        return Err(AnalystError::Exists(role.to_string()));
    }
    tx.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD {} NOINHERIT; GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON sensor_limits TO {role}; GRANT SELECT ON device_status_settings TO {role}; GRANT EXECUTE ON FUNCTION storepulse_analyst_tenant(name) TO {role}",
        literal(password)
    ))
    .await?;
    // Tables with row-level security, views with the invoker's rights, and views
    // filtering by the analyst's tenant.
    let relations = tx
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('public', 'storepulse_analyst')
               AND (c.relrowsecurity
                    OR (c.relkind = 'v'
                        AND ('security_invoker=true' = ANY (coalesce(c.reloptions, '{}'))
                             OR pg_get_viewdef(c.oid) LIKE '%storepulse_analyst_tenant(CURRENT_USER)%')))
             ORDER BY 1",
            &[],
        )
        .await?;
    for r in &relations {
        let rel: String = r.get(0);
        tx.batch_execute(&format!("GRANT SELECT ON {rel} TO {role}"))
            .await?;
    }
    let analyst_schema = tx
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = 'storepulse_analyst'",
            &[],
        )
        .await?
        .is_some();
    if analyst_schema {
        tx.batch_execute(&format!(
            "GRANT USAGE ON SCHEMA storepulse_analyst TO {role}; ALTER ROLE {role} SET search_path = storepulse_analyst, public"
        ))
        .await?;
    }
    tx.execute(
        "INSERT INTO analyst_roles (role_name, tenant_id) VALUES ($1, $2)",
        &[&role, &tenant],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Every analyst role, by name.
pub async fn list(pool: &Pool) -> Result<Vec<AnalystRole>, AnalystError> {
    let client = pool.get().await?;
    Ok(client
        .query(
            "SELECT role_name, tenant_id, created_at FROM analyst_roles ORDER BY role_name",
            &[],
        )
        .await?
        .iter()
        .map(|r| AnalystRole {
            role_name: r.get(0),
            tenant_id: r.get(1),
            created_at: r.get(2),
        })
        .collect())
}

/// Drops analyst role `role` (only roles this command created).
pub async fn drop(pool: &Pool, role: &str) -> Result<(), AnalystError> {
    check_role_name(role)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let n = tx
        .execute("DELETE FROM analyst_roles WHERE role_name = $1", &[&role])
        .await?;
    if n == 0 {
        return Err(AnalystError::NotAnalyst(role.to_string()));
    }
    tx.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        for ok in ["acme_analyst", "a", "t1_reader"] {
            assert!(check_role_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "Acme", "a-b", "a;drop role x", &"a".repeat(64)] {
            assert!(check_role_name(bad).is_err(), "{bad}");
        }
        assert_eq!(literal("it's"), "'it''s'");
    }
}
