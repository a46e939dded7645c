//! The PostgreSQL side of [`AuthStore`]: users (username unique by
//! constraint), API keys (by id and by hash), sessions and refresh tokens
//! (their `revoked` and `used` flags as columns too, so a revocation or a
//! use is one conditional `UPDATE`), and the audit log per organization.
//! Audit records are appended without a wait (`append_audit` is a plain
//! call), so they are held in memory, at most [`MAX_PENDING_AUDIT`], and
//! written before the log is next read or swept (and by the store's flush,
//! once this is a whole `Store`).

use sqlx::Row as _;

use super::{PgStore, all, backend, bigint, decode, encode, ms, name_taken, one, update_record};
use crate::store::StoreError;
use crate::store::auth::{
    ApiKeyRecord, AuditRecord, AuthStore, RefreshRecord, RefreshUse, SessionRecord, UserRecord,
};
use crate::store::orgs::InOrg as _;

/// Audit records held for their write at most; past it an append fails
/// (and is logged by the caller) until a write catches up.
pub(super) const MAX_PENDING_AUDIT: usize = 10_000;

fn rows(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl PgStore {
    /// Writes the audit records appended so far. One write at a time, and
    /// a record leaves memory only once its row is committed, so a write
    /// that fails or is dropped half-way loses nothing (a row written twice
    /// is one row). A record the database refuses on its own is logged and
    /// dropped, so it cannot hold back the ones after it.
    pub(super) async fn write_pending_audit(&self) -> Result<(), StoreError> {
        let _writing = self.audit_writes.lock().await;
        let pending = self.pending_audit().clone();
        if pending.is_empty() {
            return Ok(());
        }
        let written = match insert_audit(&self.pool, &pending).await {
            Ok(()) => pending.len(),
            // The database answered: one of the records may be what it
            // refuses, so each goes alone.
            Err(sqlx::Error::Database(e)) => {
                tracing::warn!(error = %e, "an audit batch failed; writing it row by row");
                let mut written = 0;
                for record in &pending {
                    match insert_audit(&self.pool, std::slice::from_ref(record)).await {
                        Ok(()) => {}
                        Err(sqlx::Error::Database(e)) => {
                            tracing::error!(error = %e, id = %record.id, action = %record.action,
                                "an audit record the database refuses is dropped");
                        }
                        // Not this record's fault: the rest wait.
                        Err(e) => {
                            self.pending_audit().drain(..written);
                            return Err(backend(e));
                        }
                    }
                    written += 1;
                }
                written
            }
            Err(e) => return Err(backend(e)),
        };
        self.pending_audit().drain(..written);
        Ok(())
    }

    fn pending_audit(&self) -> std::sync::MutexGuard<'_, Vec<AuditRecord>> {
        self.pending_audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Inserts `records` in one transaction (a record that cannot be encoded
/// is written as `null`, which the column refuses: the database's error).
async fn insert_audit(pool: &sqlx::PgPool, records: &[AuditRecord]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for record in records {
        sqlx::query(
            "INSERT INTO audit (org, id, record) VALUES ($1, $2, $3)
             ON CONFLICT (org, id) DO NOTHING",
        )
        .bind(record.org())
        .bind(&record.id)
        .bind(serde_json::to_value(record).ok())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Deletes every API key of a user; how many.
async fn revoke_keys_of(tx: &mut sqlx::PgConnection, user_id: &str) -> Result<usize, StoreError> {
    let done = sqlx::query("DELETE FROM api_keys WHERE owner_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    Ok(rows(done.rows_affected()))
}

/// Revokes every live session of a user but `except`; how many.
async fn revoke_sessions_of(
    tx: &mut sqlx::PgConnection,
    user_id: &str,
    except: Option<&str>,
) -> Result<usize, StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked = true, record = jsonb_set(record, '{revoked}', 'true')
          WHERE user_id = $1 AND NOT revoked AND id IS DISTINCT FROM $2",
    )
    .bind(user_id)
    .bind(except)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    Ok(rows(done.rows_affected()))
}

#[async_trait::async_trait]
impl AuthStore for PgStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, username, record) VALUES ($1, $2, $3)")
            .bind(&user.id)
            .bind(&user.username)
            .bind(encode(user)?)
            .execute(&self.pool)
            .await
            .map_err(|e| name_taken(e, &user.username))?;
        Ok(())
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        one(&self.pool, "SELECT record FROM users WHERE id = $1", id).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        one(
            &self.pool,
            "SELECT record FROM users WHERE username = $1",
            username,
        )
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        all(&self.pool, "SELECT record FROM users ORDER BY id").await
    }

    async fn update_user(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r UserRecord) -> Result<UserRecord, StoreError> + Send + Sync),
    ) -> Result<Option<UserRecord>, StoreError> {
        // The username does not change.
        let keeping_name = |current: &UserRecord| {
            Ok(UserRecord {
                username: current.username.clone(),
                ..change(current)?
            })
        };
        update_record(&self.pool, "users", id, &keeping_name).await
    }

    async fn delete_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let deleted = one(
            &mut *tx,
            "DELETE FROM users WHERE id = $1 RETURNING record",
            id,
        )
        .await?;
        if deleted.is_none() {
            return Ok(None);
        }
        revoke_keys_of(&mut tx, id).await?;
        revoke_sessions_of(&mut tx, id, None).await?;
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (id, hash, owner_id, record) VALUES ($1, $2, $3, $4)")
            .bind(&key.id)
            .bind(&key.hash)
            .bind(&key.owner_id)
            .bind(encode(key)?)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        one(&self.pool, "SELECT record FROM api_keys WHERE id = $1", id).await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        one(
            &self.pool,
            "SELECT record FROM api_keys WHERE hash = $1",
            hash,
        )
        .await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        all(&self.pool, "SELECT record FROM api_keys ORDER BY id").await
    }

    async fn delete_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        one(
            &self.pool,
            "DELETE FROM api_keys WHERE id = $1 RETURNING record",
            id,
        )
        .await
    }

    async fn revoke_user_keys(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        revoke_keys_of(&mut conn, user_id).await
    }

    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, expires_ms, revoked, record)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id,
                expires_ms = EXCLUDED.expires_ms, revoked = EXCLUDED.revoked,
                record = EXCLUDED.record",
        )
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(ms(session.expires_ms))
        .bind(session.revoked)
        .bind(encode(session)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        one(&self.pool, "SELECT record FROM sessions WHERE id = $1", id).await
    }

    async fn extend_session(
        &self,
        id: &str,
        expires_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE sessions SET expires_ms = $2,
                record = jsonb_set(record, '{expires_ms}', to_jsonb($2))
              WHERE id = $1 AND NOT revoked RETURNING record",
        )
        .bind(id)
        .bind(ms(expires_ms))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| decode(row.get("record"))).transpose()
    }

    async fn revoke_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET revoked = true, record = jsonb_set(record, '{revoked}', 'true')
              WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        revoke_sessions_of(&mut conn, user_id, except).await
    }

    async fn put_refresh_token(&self, hash: &str, token: &RefreshRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, expires_ms, used, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hash) DO UPDATE SET expires_ms = EXCLUDED.expires_ms,
                used = EXCLUDED.used, record = EXCLUDED.record",
        )
        .bind(hash)
        .bind(ms(token.expires_ms))
        .bind(token.used)
        .bind(encode(token)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn use_refresh_token(&self, hash: &str) -> Result<RefreshUse, StoreError> {
        // One conditional update: of two uses at once, one finds it unused.
        let fresh = sqlx::query(
            "UPDATE refresh_tokens SET used = true, record = jsonb_set(record, '{used}', 'true')
              WHERE hash = $1 AND NOT used RETURNING record",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if let Some(row) = fresh {
            let token: RefreshRecord = decode(row.get("record"))?;
            // As it was before this use.
            return Ok(RefreshUse::Fresh(RefreshRecord {
                used: false,
                ..token
            }));
        }
        let row = sqlx::query("SELECT record FROM refresh_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(match row {
            Some(row) => RefreshUse::Reused(decode(row.get("record"))?),
            None => RefreshUse::Unknown,
        })
    }

    async fn expire_sessions(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut expired = 0;
        for table in ["refresh_tokens", "sessions"] {
            let done = sqlx::query(&format!("DELETE FROM {table} WHERE expires_ms < $1"))
                .bind(ms(now_ms))
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            expired += rows(done.rows_affected());
        }
        Ok(expired)
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut pending = self.pending_audit();
        if pending.len() >= MAX_PENDING_AUDIT {
            return Err(StoreError::Backend(format!(
                "{MAX_PENDING_AUDIT} audit records wait for the database already"
            )));
        }
        pending.push(record.clone());
        Ok(())
    }

    async fn audit_page(
        &self,
        org: &str,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<AuditRecord>, usize), StoreError> {
        self.write_pending_audit().await?;
        let rows = sqlx::query(
            "SELECT record FROM audit WHERE org = $1 ORDER BY id DESC OFFSET $2 LIMIT $3",
        )
        .bind(org)
        .bind(i64::try_from(skip).unwrap_or(i64::MAX))
        .bind(i64::try_from(take).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let total: i64 = sqlx::query("SELECT count(*) AS n FROM audit WHERE org = $1")
            .bind(org)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?
            .get("n");
        let page = rows
            .into_iter()
            .map(|row| decode(row.get("record")))
            .collect::<Result<_, _>>()?;
        Ok((page, usize::try_from(total).unwrap_or(0)))
    }

    async fn remove_audit_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.write_pending_audit().await?;
        let done = sqlx::query(
            "DELETE FROM audit WHERE (org, id) IN (
                SELECT org, id FROM audit WHERE id < $1 ORDER BY id LIMIT $2)",
        )
        .bind(crate::store::lowest_id_at(before_ms))
        .bind(bigint(limit))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows(done.rows_affected()))
    }
}
