//! The sled side of [`AuthStore`]: `users` with the unique index
//! `user_names`, `api_keys` with `api_key_hashes`, `sessions`,
//! `refresh_tokens` (keyed by hash) and `audit` (keyed by UUIDv7, so time order).

use super::{Change, SledStore, backend, decode, put, remove_older, swap, update};
use crate::store::StoreError;
use crate::store::auth::{
    ApiKeyRecord, AuditRecord, AuthStore, RefreshRecord, RefreshUse, SessionRecord, UserRecord,
};
use crate::store::orgs::{DEFAULT_ORG, InOrg as _};

#[async_trait::async_trait]
impl AuthStore for SledStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let claimed = self
            .user_names
            .compare_and_swap(
                user.username.as_bytes(),
                None as Option<&[u8]>,
                Some(user.id.as_bytes()),
            )
            .map_err(backend)?;
        if claimed.is_err() {
            return Err(StoreError::NameTaken(user.username.clone()));
        }
        put(&self.users, user.id.as_bytes(), user)
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Self::get_decoded(&self.users, id)
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Self::get_indexed(&self.user_names, &self.users, username)
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Self::all_decoded(&self.users)
    }

    async fn update_user(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r UserRecord) -> Result<UserRecord, StoreError> + Send + Sync),
    ) -> Result<Option<UserRecord>, StoreError> {
        let updated = update(&self.users, id.as_bytes(), |before: &UserRecord| {
            let mut next = change(before)?;
            // A username is changed only by renaming, never here.
            next.username.clone_from(&before.username);
            Ok(next)
        })?;
        Ok(updated.map(|(_, after)| after))
    }

    async fn delete_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(bytes) = self.users.remove(id).map_err(backend)? else {
            return Ok(None);
        };
        let user: UserRecord = decode(&bytes)?;
        self.user_names
            .compare_and_swap(
                user.username.as_bytes(),
                Some(id.as_bytes()),
                None as Option<&[u8]>,
            )
            .map_err(backend)?
            .ok();
        self.revoke_user_keys(&user.id).await?;
        self.revoke_user_sessions(&user.id, None).await?;
        Ok(Some(user))
    }

    async fn revoke_user_keys(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut revoked = 0;
        for key in self.api_keys().await? {
            if key.owner_id == user_id && self.delete_api_key(&key.id).await?.is_some() {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        put(&self.api_keys, key.id.as_bytes(), key)?;
        self.api_key_hashes
            .insert(key.hash.as_bytes(), key.id.as_bytes())
            .map_err(backend)?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Self::get_decoded(&self.api_keys, id)
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Self::get_indexed(&self.api_key_hashes, &self.api_keys, hash)
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Self::all_decoded(&self.api_keys)
    }

    async fn delete_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(bytes) = self.api_keys.remove(id).map_err(backend)? else {
            return Ok(None);
        };
        let key: ApiKeyRecord = decode(&bytes)?;
        self.api_key_hashes
            .remove(key.hash.as_bytes())
            .map_err(backend)?;
        Ok(Some(key))
    }

    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        put(&self.sessions, session.id.as_bytes(), session)
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Self::get_decoded(&self.sessions, id)
    }

    async fn extend_session(
        &self,
        id: &str,
        expires_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let swapped = swap(&self.sessions, id.as_bytes(), |session: &SessionRecord| {
            Ok(if session.revoked {
                Change::Keep
            } else {
                Change::Put(SessionRecord {
                    expires_ms,
                    ..session.clone()
                })
            })
        })?;
        Ok(match swapped {
            Some((_, Change::Put(extended))) => Some(extended),
            _ => None,
        })
    }

    async fn revoke_session(&self, id: &str) -> Result<(), StoreError> {
        update(&self.sessions, id.as_bytes(), |session: &SessionRecord| {
            Ok(SessionRecord {
                revoked: true,
                ..session.clone()
            })
        })?;
        Ok(())
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut revoked = 0;
        for session in Self::all_decoded::<SessionRecord>(&self.sessions)? {
            if session.user_id == user_id && !session.revoked && Some(&*session.id) != except {
                self.revoke_session(&session.id).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn put_refresh_token(&self, hash: &str, token: &RefreshRecord) -> Result<(), StoreError> {
        put(&self.refresh_tokens, hash.as_bytes(), token)
    }

    async fn use_refresh_token(&self, hash: &str) -> Result<RefreshUse, StoreError> {
        let swapped = swap(
            &self.refresh_tokens,
            hash.as_bytes(),
            |token: &RefreshRecord| {
                Ok(if token.used {
                    Change::Keep
                } else {
                    Change::Put(RefreshRecord {
                        used: true,
                        ..token.clone()
                    })
                })
            },
        )?;
        Ok(match swapped {
            None => RefreshUse::Unknown,
            Some((token, Change::Put(_))) => RefreshUse::Fresh(token),
            Some((token, Change::Keep | Change::Remove)) => RefreshUse::Reused(token),
        })
    }

    async fn expire_sessions(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut expired = 0;
        for entry in self.refresh_tokens.iter() {
            let (key, bytes) = entry.map_err(backend)?;
            if decode::<RefreshRecord>(&bytes).map_or(true, |t| t.expires_ms < now_ms) {
                self.refresh_tokens.remove(key).map_err(backend)?;
                expired += 1;
            }
        }
        for entry in self.sessions.iter() {
            let (key, bytes) = entry.map_err(backend)?;
            if decode::<SessionRecord>(&bytes).map_or(true, |s| s.expires_ms < now_ms) {
                self.sessions.remove(key).map_err(backend)?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let before = self
            .audit
            .insert(audit_key(record.org(), &record.id), super::encode(record)?)
            .map_err(backend)?;
        if before.is_none() {
            super::Counted::add(&self.counted.audit, 1);
            if record.org() != DEFAULT_ORG {
                *self
                    .counted
                    .audit_orgs()
                    .entry(record.org().to_owned())
                    .or_default() += 1;
            }
        }
        Ok(())
    }

    async fn audit_page(
        &self,
        org: &str,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<AuditRecord>, usize), StoreError> {
        let entries = if org == DEFAULT_ORG {
            self.audit.range(..ORG_AUDIT)
        } else {
            let prefix = audit_key(org, "");
            let end = [&prefix[..prefix.len() - 1], b"0"].concat();
            self.audit.range(prefix..end)
        };
        let mut page = Vec::new();
        for entry in entries.rev().skip(skip).take(take) {
            page.push(decode(&entry.map_err(backend)?.1)?);
        }
        let total = self.counted.audit_of(org);
        Ok((page, usize::try_from(total).unwrap_or(usize::MAX)))
    }

    async fn remove_audit_before(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut removed = remove_older(&self.audit, b"", before_ms, limit)?;
        let orgs: Vec<String> = self.counted.audit_orgs().keys().cloned().collect();
        for org in orgs {
            let prefix = audit_key(&org, "");
            let here = remove_older(&self.audit, &prefix, before_ms, limit - removed)?;
            let mut by_org = self.counted.audit_orgs();
            if let Some(n) = by_org.get_mut(&org) {
                *n = n.saturating_sub(here as u64);
                if *n == 0 {
                    // An organization with no entries left has no counter.
                    by_org.remove(&org);
                }
            }
            drop(by_org);
            removed += here;
            if removed == limit {
                break;
            }
        }
        super::Counted::remove(&self.counted.audit, removed);
        Ok(removed)
    }
}

/// Where the audit entries of organizations other than the default one
/// begin: above every UUIDv7 (hex), so the default one's keys stay the
/// plain ids they were, and their sweep by id range never meets these.
pub(super) const ORG_AUDIT: &[u8] = b"~";

/// An audit entry's key: its id in the default organization, else
/// `~<org>/<id>`.
fn audit_key(org: &str, id: &str) -> Vec<u8> {
    if org == DEFAULT_ORG {
        id.as_bytes().to_vec()
    } else {
        [ORG_AUDIT, org.as_bytes(), b"/", id.as_bytes()].concat()
    }
}

/// The organization of a key made by [`audit_key`] outside the default one.
pub(super) fn audit_org(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(ORG_AUDIT)?;
    let slash = rest.iter().position(|b| *b == b'/')?;
    Some(&rest[..slash])
}

#[cfg(test)]
mod tests {
    use super::super::tests::TEST_CACHE_BYTES;
    use super::*;

    #[tokio::test]
    async fn a_refresh_token_is_used_once_and_a_revoked_session_is_not_extended() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        let token = RefreshRecord {
            session_id: "s".into(),
            user_id: "u".into(),
            expires_ms: 10,
            used: false,
        };
        store.put_refresh_token("h", &token).await.unwrap();
        assert!(matches!(
            store.use_refresh_token("h").await.unwrap(),
            RefreshUse::Fresh(t) if !t.used
        ));
        assert!(matches!(
            store.use_refresh_token("h").await.unwrap(),
            RefreshUse::Reused(t) if t.used
        ));
        assert!(matches!(
            store.use_refresh_token("nope").await.unwrap(),
            RefreshUse::Unknown
        ));

        let session = SessionRecord {
            id: "s".into(),
            user_id: "u".into(),
            created_ms: 1,
            expires_ms: 10,
            revoked: false,
        };
        store.put_session(&session).await.unwrap();
        let extended = store.extend_session("s", 20).await.unwrap();
        assert_eq!(extended.map(|s| s.expires_ms), Some(20));
        store.revoke_session("s").await.unwrap();
        assert!(store.extend_session("s", 30).await.unwrap().is_none());
        let kept = store.session("s").await.unwrap().unwrap();
        assert_eq!((kept.expires_ms, kept.revoked), (20, true));
        assert!(store.extend_session("missing", 30).await.unwrap().is_none());
    }
}
