//! The PostgreSQL side of [`ScriptDataStore`]: `script_kv` by script and
//! key, `script_config` by script, `shared_secrets` by `<org>/<name>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::Row as _;

use super::{PgStore, all, backend, bigint, encode, one};
use crate::store::orgs::name_key;
use crate::store::script_data::{KvRefusal, ScriptDataStore, SharedSecretRecord};
use crate::store::{ScriptRecord, StoreError};

fn size(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait::async_trait]
impl ScriptDataStore for PgStore {
    async fn kv_get(&self, script_id: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM script_kv WHERE script_id = $1 AND key = $2")
            .bind(script_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.map(|row| row.get("value")))
    }

    async fn kv_set(
        &self,
        script_id: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<(), KvRefusal> {
        // One writer per script at a time, on every node (a transaction
        // advisory lock on the script), so two writes cannot both fit a
        // quota only one of them fits.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(script_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let row = sqlx::query(
            "SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0)::bigint AS used
             FROM script_kv WHERE script_id = $1 AND key <> $2",
        )
        .bind(script_id)
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let would = size(row.get("used")) + (key.len() + value.len()) as u64;
        if would > quota {
            return Err(KvRefusal::OverQuota { would, quota });
        }
        sqlx::query(
            "INSERT INTO script_kv (script_id, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (script_id, key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(script_id)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn kv_delete(&self, script_id: &str, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM script_kv WHERE script_id = $1 AND key = $2")
            .bind(script_id)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn kv_keys(
        &self,
        script_id: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // From the prefix on in key order, so the scan ends at `limit`.
        let rows = sqlx::query(
            "SELECT key FROM script_kv
             WHERE script_id = $1 AND key >= $2 AND starts_with(key, $2)
             ORDER BY key LIMIT $3",
        )
        .bind(script_id)
        .bind(prefix)
        .bind(bigint(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(|row| row.get("key")).collect())
    }

    async fn kv_entries(&self, script_id: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows =
            sqlx::query("SELECT key, value FROM script_kv WHERE script_id = $1 ORDER BY key")
                .bind(script_id)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get("key"), row.get("value")))
            .collect())
    }

    async fn script_config(&self, script_id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let row = sqlx::query(r#"SELECT "values" FROM script_config WHERE script_id = $1"#)
            .bind(script_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map_or_else(
            || Ok(BTreeMap::new()),
            |row| super::decode(row.get("values")),
        )
    }

    async fn set_script_config(
        &self,
        script_id: &str,
        values: &BTreeMap<String, String>,
        allow: &(dyn for<'r> Fn(&'r ScriptRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The script's row stays locked until the config is written.
        let script = super::scripts::locked(&mut tx, script_id).await?;
        allow(&script)?;
        sqlx::query(
            r#"INSERT INTO script_config (script_id, "values") VALUES ($1, $2)
               ON CONFLICT (script_id) DO UPDATE SET "values" = EXCLUDED."values""#,
        )
        .bind(script_id)
        .bind(encode(values)?)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn shared_secrets(&self) -> Result<Arc<[SharedSecretRecord]>, StoreError> {
        let secrets: Vec<SharedSecretRecord> =
            all(&self.pool, "SELECT record FROM shared_secrets ORDER BY key").await?;
        Ok(secrets.into())
    }

    async fn shared_secret(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<SharedSecretRecord>, StoreError> {
        one(
            &self.pool,
            "SELECT record FROM shared_secrets WHERE key = $1",
            &name_key(org, name),
        )
        .await
    }

    async fn put_shared_secret(&self, secret: &SharedSecretRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO shared_secrets (key, record) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(secret.key())
        .bind(encode(secret)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_shared_secret(&self, org: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM shared_secrets WHERE key = $1")
            .bind(name_key(org, name))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}
