//! The PostgreSQL side of [`SharedCounts`]: `quota_uses`, a row per
//! organization, quota and window, counted up by one conditional `UPDATE`.

use sqlx::Row as _;

use super::{PgStore, backend, ms};
use crate::store::StoreError;
use crate::store::shared_counts::{SharedCounts, Taken};

const KEY: &str = "org = $1 AND quota = $2 AND window_ms = $3";

/// `sql` with one count's key bound as `$1`, `$2`, `$3`.
fn keyed<'q>(
    sql: &'q str,
    org: &'q str,
    quota: &'q str,
    window_ms: u64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql).bind(org).bind(quota).bind(ms(window_ms))
}

fn count(used: i64) -> u64 {
    u64::try_from(used).unwrap_or(0)
}

#[async_trait::async_trait]
impl SharedCounts for PgStore {
    async fn take_use(
        &self,
        org: &str,
        quota: &str,
        window_ms: u64,
        limit: u64,
    ) -> Result<Taken, StoreError> {
        let taken = keyed(
            &format!(
                "UPDATE quota_uses SET used = used + 1 WHERE {KEY} AND used < $4 RETURNING used"
            ),
            org,
            quota,
            window_ms,
        )
        .bind(ms(limit))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if let Some(row) = taken {
            return Ok(Taken::Used(count(row.try_get("used").map_err(backend)?)));
        }
        Ok(match self.uses(org, quota, window_ms).await? {
            Some(used) => Taken::Refused(used),
            None => Taken::Uncounted,
        })
    }

    async fn start_uses(
        &self,
        org: &str,
        quota: &str,
        window_ms: u64,
        used: u64,
    ) -> Result<(), StoreError> {
        keyed(
            "INSERT INTO quota_uses (org, quota, window_ms, used) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            org,
            quota,
            window_ms,
        )
        .bind(ms(used))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        keyed(
            "DELETE FROM quota_uses WHERE org = $1 AND quota = $2 AND window_ms < $3",
            org,
            quota,
            window_ms,
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn give_back_use(
        &self,
        org: &str,
        quota: &str,
        window_ms: u64,
    ) -> Result<(), StoreError> {
        keyed(
            &format!("UPDATE quota_uses SET used = used - 1 WHERE {KEY} AND used > 0"),
            org,
            quota,
            window_ms,
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn uses(
        &self,
        org: &str,
        quota: &str,
        window_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let row = keyed(
            &format!("SELECT used FROM quota_uses WHERE {KEY}"),
            org,
            quota,
            window_ms,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| row.try_get("used").map(count).map_err(backend))
            .transpose()
    }

    async fn forget_uses(&self, org: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM quota_uses WHERE org = $1")
            .bind(org)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_s_count_stops_at_its_limit_and_a_new_window_drops_the_old() {
        let url = kiln_testpg::shared().fresh_database();
        let store = PgStore::connect(&url).await.unwrap();
        let quota = "requests_per_hour";
        assert_eq!(
            store.take_use("o", quota, 0, 2).await.unwrap(),
            Taken::Uncounted
        );
        store.start_uses("o", quota, 0, 1).await.unwrap();
        assert_eq!(
            store.take_use("o", quota, 0, 2).await.unwrap(),
            Taken::Used(2)
        );
        assert_eq!(
            store.take_use("o", quota, 0, 2).await.unwrap(),
            Taken::Refused(2)
        );
        store.give_back_use("o", quota, 0).await.unwrap();
        assert_eq!(store.uses("o", quota, 0).await.unwrap(), Some(1));
        // The next window's first use: the older one's row goes.
        store.start_uses("o", quota, 3_600_000, 0).await.unwrap();
        assert_eq!(store.uses("o", quota, 0).await.unwrap(), None);
        let rows: i64 = sqlx::query("SELECT count(*) AS n FROM quota_uses")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get("n");
        assert_eq!(rows, 1, "one row per organization, quota and window");
        store.forget_uses("o").await.unwrap();
        assert_eq!(store.uses("o", quota, 3_600_000).await.unwrap(), None);
    }
}
