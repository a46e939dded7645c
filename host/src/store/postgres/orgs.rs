//! The PostgreSQL side of [`OrgStore`]: `orgs`, the name unique by
//! constraint (the sled store claims it by compare-and-swap).

use super::{PgStore, backend, encode, name_taken, one, records};
use crate::store::StoreError;
use crate::store::orgs::{DEFAULT_ORG, OrgRecord, OrgStore};

impl PgStore {
    /// Makes the default organization unless it exists; of nodes starting
    /// together, one makes it.
    pub(super) async fn ensure_default_org(&self) -> Result<(), StoreError> {
        let org = OrgRecord::default_org(&crate::now());
        sqlx::query(
            "INSERT INTO orgs (id, name, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&org.id)
        .bind(&org.name)
        .bind(encode(&org)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl OrgStore for PgStore {
    async fn create_org(&self, org: &OrgRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO orgs (id, name, record) VALUES ($1, $2, $3)")
            .bind(&org.id)
            .bind(&org.name)
            .bind(encode(org)?)
            .execute(&self.pool)
            .await
            .map_err(|e| name_taken(e, &org.name))?;
        Ok(())
    }

    async fn org(&self, id_or_name: &str) -> Result<Option<OrgRecord>, StoreError> {
        // An id wins over another organization's name.
        let sql =
            "SELECT record FROM orgs WHERE id = $1 OR name = $1 ORDER BY id = $1 DESC LIMIT 1";
        one(&self.pool, sql, id_or_name).await
    }

    async fn orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        let rows = sqlx::query("SELECT record FROM orgs ORDER BY id = $1 DESC, id")
            .bind(DEFAULT_ORG)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        records(rows)
    }

    async fn update_org(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r OrgRecord) -> Result<OrgRecord, StoreError> + Send + Sync),
    ) -> Result<Option<OrgRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(current) = super::locked::<OrgRecord>(&mut tx, "orgs", id).await? else {
            return Ok(None);
        };
        let next = change(&current)?;
        sqlx::query("UPDATE orgs SET name = $2, record = $3 WHERE id = $1")
            .bind(id)
            .bind(&next.name)
            .bind(encode(&next)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &next.name))?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(next))
    }

    async fn delete_org(&self, id: &str) -> Result<Option<OrgRecord>, StoreError> {
        one(
            &self.pool,
            "DELETE FROM orgs WHERE id = $1 RETURNING record",
            id,
        )
        .await
    }
}
