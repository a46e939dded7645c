//! The sled side of [`AuthStore`]: `users` with the unique index
//! `user_names`, `api_keys` with `api_key_hashes`, `sessions`,
//! `refresh_tokens` (keyed by hash) and `audit` (keyed by UUIDv7, so time order).

use super::{SledStore, backend, decode, encode};
use crate::store::StoreError;
use crate::store::auth::{
    ApiKeyRecord, AuditRecord, AuthStore, RefreshRecord, RefreshUse, SessionRecord, UserRecord,
};

impl SledStore {
    pub(super) fn get_decoded<T: serde::de::DeserializeOwned>(
        tree: &sled::Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        tree.get(key)
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    pub(super) fn all_decoded<T: serde::de::DeserializeOwned>(
        tree: &sled::Tree,
    ) -> Result<Vec<T>, StoreError> {
        let mut all = Vec::new();
        for entry in tree.iter() {
            let (key, bytes) = entry.map_err(backend)?;
            match decode(&bytes) {
                Ok(record) => all.push(record),
                // One unreadable record must not hide the rest.
                Err(e) => tracing::error!(key = %String::from_utf8_lossy(&key), error = %e,
                    "skipping an unreadable record"),
            }
        }
        Ok(all)
    }
}

impl AuthStore for SledStore {
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
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
        self.users
            .insert(user.id.as_bytes(), encode(user)?)
            .map_err(backend)?;
        Ok(())
    }

    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Self::get_decoded(&self.users, id)
    }

    fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.user_names.get(username).map_err(backend)? {
            Some(id) => self.user(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Self::all_decoded(&self.users)
    }

    fn update_user(
        &self,
        id: &str,
        change: &dyn Fn(&UserRecord) -> Result<UserRecord, StoreError>,
    ) -> Result<Option<UserRecord>, StoreError> {
        let swapped = super::swap(&self.users, id.as_bytes(), |before: &UserRecord| {
            let mut next = change(before)?;
            // A username is changed only by renaming, never here.
            next.username.clone_from(&before.username);
            Ok(Some(next))
        })?;
        Ok(swapped.and_then(|(_, after)| after))
    }

    fn delete_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
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
        for key in self.api_keys()? {
            if key.owner_id == user.id {
                self.delete_api_key(&key.id)?;
            }
        }
        self.revoke_user_sessions(&user.id)?;
        Ok(Some(user))
    }

    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.api_keys
            .insert(key.id.as_bytes(), encode(key)?)
            .map_err(backend)?;
        self.api_key_hashes
            .insert(key.hash.as_bytes(), key.id.as_bytes())
            .map_err(backend)?;
        Ok(())
    }

    fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Self::get_decoded(&self.api_keys, id)
    }

    fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self.api_key_hashes.get(hash).map_err(backend)? {
            Some(id) => self.api_key(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Self::all_decoded(&self.api_keys)
    }

    fn delete_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(bytes) = self.api_keys.remove(id).map_err(backend)? else {
            return Ok(None);
        };
        let key: ApiKeyRecord = decode(&bytes)?;
        self.api_key_hashes
            .remove(key.hash.as_bytes())
            .map_err(backend)?;
        Ok(Some(key))
    }

    fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.sessions
            .insert(session.id.as_bytes(), encode(session)?)
            .map_err(backend)?;
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Self::get_decoded(&self.sessions, id)
    }

    fn extend_session(
        &self,
        id: &str,
        expires_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        loop {
            let Some(current) = self.sessions.get(id).map_err(backend)? else {
                return Ok(None);
            };
            let mut session: SessionRecord = decode(&current)?;
            if session.revoked {
                return Ok(None);
            }
            session.expires_ms = expires_ms;
            let swapped = self
                .sessions
                .compare_and_swap(id, Some(current), Some(encode(&session)?))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(Some(session));
            }
        }
    }

    fn revoke_session(&self, id: &str) -> Result<(), StoreError> {
        self.sessions
            .fetch_and_update(id, |bytes| {
                let mut session: SessionRecord = decode(bytes?).ok()?;
                session.revoked = true;
                encode(&session).ok()
            })
            .map_err(backend)?;
        Ok(())
    }

    fn revoke_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut revoked = 0;
        for session in Self::all_decoded::<SessionRecord>(&self.sessions)? {
            if session.user_id == user_id && !session.revoked {
                self.revoke_session(&session.id)?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    fn put_refresh_token(&self, hash: &str, token: &RefreshRecord) -> Result<(), StoreError> {
        self.refresh_tokens
            .insert(hash.as_bytes(), encode(token)?)
            .map_err(backend)?;
        Ok(())
    }

    fn use_refresh_token(&self, hash: &str) -> Result<RefreshUse, StoreError> {
        loop {
            let Some(current) = self.refresh_tokens.get(hash).map_err(backend)? else {
                return Ok(RefreshUse::Unknown);
            };
            let token: RefreshRecord = decode(&current)?;
            if token.used {
                return Ok(RefreshUse::Reused(token));
            }
            let used = RefreshRecord {
                used: true,
                ..token.clone()
            };
            let swapped = self
                .refresh_tokens
                .compare_and_swap(hash, Some(current), Some(encode(&used)?))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(RefreshUse::Fresh(token));
            }
        }
    }

    fn expire_sessions(&self, now_ms: u64) -> Result<usize, StoreError> {
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
        self.audit
            .insert(record.id.as_bytes(), encode(record)?)
            .map_err(backend)?;
        Ok(())
    }

    fn audit_page(
        &self,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<AuditRecord>, usize), StoreError> {
        let mut page = Vec::new();
        for entry in self.audit.iter().rev().skip(skip).take(take) {
            page.push(decode(&entry.map_err(backend)?.1)?);
        }
        Ok((page, self.audit.len()))
    }
}
