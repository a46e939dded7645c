//! The sled side of [`OrgStore`]: `orgs` by id with the unique index
//! `org_names`, and the schema 5 migration of users into the default
//! organization.

use std::sync::PoisonError;

use super::{SledStore, backend, decode, encode, put};
use crate::store::StoreError;
use crate::store::orgs::{DEFAULT_ORG, OrgRecord, OrgStore};

impl SledStore {
    /// Makes the default organization on a store that lacks it (a new one,
    /// or one from before organizations).
    pub(super) fn ensure_default_org(&self) -> Result<(), StoreError> {
        if self.orgs.get(DEFAULT_ORG).map_err(backend)?.is_none() {
            let org = OrgRecord::default_org(&crate::now());
            // The name may be taken only by a record that is not the
            // default one: a store can't have made that, so it wins.
            self.org_names
                .insert(org.name.as_bytes(), org.id.as_bytes())
                .map_err(backend)?;
            put(&self.orgs, org.id.as_bytes(), &org)?;
        }
        Ok(())
    }

    fn claim_org_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let claimed = self
            .org_names
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(id.as_bytes()))
            .map_err(backend)?;
        match claimed {
            Ok(()) => Ok(()),
            Err(e) if e.current.as_deref() == Some(id.as_bytes()) => Ok(()),
            Err(_) => Err(StoreError::NameTaken(name.to_owned())),
        }
    }
}

/// Schema 4 → 5: a user's `role` becomes their membership of the default
/// organization, and an admin becomes a node operator (on a node of one
/// organization they are the same people). Edits the stored JSON, so no
/// older record type is kept in the code; safe to run twice.
pub(super) fn migrate_users_to_5(users: &sled::Tree) -> Result<usize, StoreError> {
    let mut moved = 0;
    for entry in users.iter() {
        let (key, bytes) = entry.map_err(backend)?;
        let mut user: serde_json::Value = decode(&bytes)?;
        let Some(fields) = user.as_object_mut() else {
            continue;
        };
        let Some(role) = fields.remove("role") else {
            continue;
        };
        if role == "admin" {
            fields.insert("operator".into(), true.into());
        }
        fields.insert(
            "memberships".into(),
            serde_json::json!([{ "org": DEFAULT_ORG, "role": role }]),
        );
        users.insert(key, encode(&user)?).map_err(backend)?;
        moved += 1;
    }
    Ok(moved)
}

#[async_trait::async_trait]
impl OrgStore for SledStore {
    async fn create_org(&self, org: &OrgRecord) -> Result<(), StoreError> {
        self.claim_org_name(&org.name, &org.id)?;
        put(&self.orgs, org.id.as_bytes(), org)
    }

    async fn org(&self, id_or_name: &str) -> Result<Option<OrgRecord>, StoreError> {
        if let Some(org) = Self::get_decoded(&self.orgs, id_or_name)? {
            return Ok(Some(org));
        }
        Self::get_indexed(&self.org_names, &self.orgs, id_or_name)
    }

    async fn orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        let mut all: Vec<OrgRecord> = Self::all_decoded(&self.orgs)?;
        // "default" sorts after the UUIDv7 ids ("0…"): put it first.
        all.sort_by_key(|o| o.id != DEFAULT_ORG);
        Ok(all)
    }

    async fn update_org(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r OrgRecord) -> Result<OrgRecord, StoreError> + Send + Sync),
    ) -> Result<Option<OrgRecord>, StoreError> {
        let _writing = self
            .org_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(before) = Self::get_decoded::<OrgRecord>(&self.orgs, id)? else {
            return Ok(None);
        };
        let mut after = change(&before)?;
        after.id.clone_from(&before.id);
        if after.name != before.name {
            self.claim_org_name(&after.name, id)?;
        }
        put(&self.orgs, id.as_bytes(), &after)?;
        if after.name != before.name {
            self.org_names
                .remove(before.name.as_bytes())
                .map_err(backend)?;
        }
        Ok(Some(after))
    }

    async fn delete_org(&self, id: &str) -> Result<Option<OrgRecord>, StoreError> {
        let _writing = self
            .org_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(bytes) = self.orgs.remove(id).map_err(backend)? else {
            return Ok(None);
        };
        let org: OrgRecord = decode(&bytes)?;
        self.org_names
            .compare_and_swap(
                org.name.as_bytes(),
                Some(id.as_bytes()),
                None as Option<&[u8]>,
            )
            .map_err(backend)?
            .ok();
        Ok(Some(org))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::TEST_CACHE_BYTES;
    use super::*;

    fn org(id: &str, name: &str) -> OrgRecord {
        OrgRecord {
            id: id.into(),
            name: name.into(),
            ..OrgRecord::default_org("2026-01-01T00:00:00.000Z")
        }
    }

    #[tokio::test]
    async fn names_are_unique_and_follow_renames() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        assert_eq!(store.orgs().await.unwrap()[0].id, DEFAULT_ORG);
        store.create_org(&org("0001", "acme")).await.unwrap();
        assert!(matches!(
            store.create_org(&org("0002", "acme")).await,
            Err(StoreError::NameTaken(_))
        ));
        assert!(matches!(
            store.create_org(&org("0002", DEFAULT_ORG)).await,
            Err(StoreError::NameTaken(_))
        ));
        assert_eq!(store.org("acme").await.unwrap().unwrap().id, "0001");
        store
            .update_org("0001", &|o| {
                Ok(OrgRecord {
                    name: "acme-2".into(),
                    ..o.clone()
                })
            })
            .await
            .unwrap();
        assert!(store.org("acme").await.unwrap().is_none());
        assert_eq!(store.org("acme-2").await.unwrap().unwrap().id, "0001");
        store.create_org(&org("0002", "acme")).await.unwrap();
        store.delete_org("0001").await.unwrap();
        assert!(store.org("acme-2").await.unwrap().is_none());
        let names: Vec<String> = store
            .orgs()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, [DEFAULT_ORG, "acme"]);
    }
}
