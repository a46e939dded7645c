//! The PostgreSQL side of [`ScriptStore`]: `scripts` (a name unique within
//! its organization) and `script_versions` (each version's content and
//! record). A script's delete takes its versions, key-value entries and
//! config with it, in one transaction.

use sqlx::Row as _;

use super::{PgStore, backend, decode, encode, name_taken, records};
use crate::store::orgs::InOrg as _;
use crate::store::scripts::ScriptStore;
use crate::store::{ScriptRecord, StoreError, VersionRecord};

/// Stores one version's content and record (replacing one of that number).
async fn put_version(
    tx: &mut sqlx::PgConnection,
    script: &ScriptRecord,
    content: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO script_versions (script_id, version, content, record)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (script_id, version)
            DO UPDATE SET content = EXCLUDED.content, record = EXCLUDED.record",
    )
    .bind(&script.id)
    .bind(i64::from(script.version))
    .bind(content)
    .bind(encode(&VersionRecord::current(script))?)
    .execute(tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// The columns a script is read from.
const COLUMNS: &str = "record, execution_count, last_executed_at";

/// A script's record with its run counters, which are kept beside it.
fn script_of(row: &sqlx::postgres::PgRow) -> Result<ScriptRecord, StoreError> {
    let mut script: ScriptRecord = decode(row.get("record"))?;
    script.execution_count = u64::try_from(row.get::<i64, _>("execution_count")).unwrap_or(0);
    script.last_executed_at = row.get("last_executed_at");
    Ok(script)
}

/// The script `id`, its row locked until `tx` ends (so writes of its data
/// see it as it is, and a deleted script gets none).
pub(super) async fn locked(
    tx: &mut sqlx::PgConnection,
    id: &str,
) -> Result<ScriptRecord, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM scripts WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(tx)
    .await
    .map_err(backend)?
    .ok_or(StoreError::NotFound)?;
    script_of(&row)
}

#[async_trait::async_trait]
impl ScriptStore for PgStore {
    async fn create_script(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("INSERT INTO scripts (id, org, name, record) VALUES ($1, $2, $3, $4)")
            .bind(&script.id)
            .bind(script.org())
            .bind(&script.name)
            .bind(encode(script)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &script.name))?;
        put_version(&mut tx, script, content).await?;
        tx.commit().await.map_err(backend)
    }

    async fn script(
        &self,
        org: &str,
        id_or_name: &str,
    ) -> Result<Option<ScriptRecord>, StoreError> {
        // By id first; another organization's id is no script here.
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM scripts WHERE org = $1 AND (id = $2 OR name = $2)
             ORDER BY id = $2 DESC LIMIT 1"
        ))
        .bind(org)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(script_of).transpose()
    }

    async fn script_content(&self, id: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query(
            "SELECT content FROM script_versions WHERE script_id = $1 AND version = $2",
        )
        .bind(id)
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(row.map(|row| row.get("content")))
    }

    async fn update_script(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r ScriptRecord) -> Result<ScriptRecord, StoreError> + Send + Sync
         ),
        content: Option<&[u8]>,
    ) -> Result<ScriptRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let current = locked(&mut tx, id).await?;
        let next = change(&current)?;
        if next.id != current.id || next.org != current.org {
            return Err(StoreError::Refused(
                "a script's id and organization are fixed".into(),
            ));
        }
        if let Some(content) = content {
            put_version(&mut tx, &next, content).await?;
        }
        sqlx::query("UPDATE scripts SET name = $2, record = $3 WHERE id = $1")
            .bind(id)
            .bind(&next.name)
            .bind(encode(&next)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &next.name))?;
        tx.commit().await.map_err(backend)?;
        Ok(next)
    }

    async fn delete_script(
        &self,
        id: &str,
        allow: &(dyn for<'r> Fn(&'r ScriptRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<ScriptRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let deleted = locked(&mut tx, id).await?;
        allow(&deleted)?;
        for sql in [
            "DELETE FROM scripts WHERE id = $1",
            "DELETE FROM script_versions WHERE script_id = $1",
            "DELETE FROM script_kv WHERE script_id = $1",
            "DELETE FROM script_config WHERE script_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    async fn script_versions(&self, id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT record FROM script_versions WHERE script_id = $1 ORDER BY version")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        records(rows)
    }

    async fn script_version(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let row =
            sqlx::query("SELECT record FROM script_versions WHERE script_id = $1 AND version = $2")
                .bind(id)
                .bind(i64::from(version))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        row.map(|row| decode(row.get("record"))).transpose()
    }

    async fn remove_versions_below(
        &self,
        id: &str,
        below: u32,
        keep: &(dyn Fn(u32) -> bool + Send + Sync),
        limit: usize,
    ) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT version FROM script_versions WHERE script_id = $1 AND version < $2
             ORDER BY version",
        )
        .bind(id)
        .bind(i64::from(below))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let doomed: Vec<i64> = rows
            .iter()
            .map(|row| row.get::<i64, _>("version"))
            .filter(|v| !u32::try_from(*v).is_ok_and(keep))
            .take(limit)
            .collect();
        let removed =
            sqlx::query("DELETE FROM script_versions WHERE script_id = $1 AND version = ANY($2)")
                .bind(id)
                .bind(&doomed)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(usize::try_from(removed.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn note_execution(&self, script_id: &str, at: &str) -> Result<(), StoreError> {
        // In the database, so runs on every node count (a deleted script
        // stays deleted: no row, no update).
        sqlx::query(
            "UPDATE scripts
             SET execution_count = execution_count + 1, last_executed_at = $2
             WHERE id = $1",
        )
        .bind(script_id)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn scripts(&self) -> Result<Vec<ScriptRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM scripts ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(script_of).collect()
    }
}
