//! Listing executions, newest first, by page number, by offset or by cursor,
//! and deleting final ones. Every listing follows the store's narrowest
//! index for its filters; a cursor page reads at most [`SCAN_BUDGET`]
//! records, so its cost does not grow with the store.

use std::ops::ControlFlow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::ApiError;
use crate::api::pagination::{Listing, MAX_SIZE, Page, PageQuery, Pagination};
use crate::store::executions::{ExecutionIndex, ExecutionWalk, ID_TIME_SLACK_MS};
use crate::store::orgs::InOrg as _;
use crate::store::{ExecutionRecord, ExecutionStatus, Store, Trigger};

/// The most records one cursor page reads looking for matches; past it the
/// page ends early and its `next_cursor` resumes where the reading stopped.
pub(super) const SCAN_BUDGET: usize = 10_000;
/// The most records a page by number or offset may skip: each skipped one is
/// read, so deeper pages are read by cursor.
pub(crate) const MAX_SKIP: usize = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page number, from 1 (with `size`; answers totals). Pages past the
    /// first 10 000 executions are refused: read them by cursor.
    page: Option<usize>,
    /// Page size, 1..=100 (default 20).
    size: Option<usize>,
    /// Page size for `cursor` or `offset` pages, 1..=100 (default 20).
    limit: Option<usize>,
    /// Records to skip (with `limit`; answers totals).
    offset: Option<usize>,
    /// A `next_cursor` or `prev_cursor` from an earlier page. Without
    /// `page` and `offset`, pages are by cursor: no totals, and each costs
    /// the same however many executions are stored.
    cursor: Option<String>,
    script_id: Option<String>,
    status: Option<ExecutionStatus>,
    trigger: Option<Trigger>,
    /// RFC 3339.
    created_after: Option<String>,
    /// RFC 3339.
    created_before: Option<String>,
}

/// A position in the newest-first list: next to an execution, going older
/// (the next page) or newer (the previous one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub newer: bool,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let side = if self.newer { "n" } else { "o" };
        URL_SAFE_NO_PAD.encode(format!("{side}:{}", self.id))
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid("cursor", "not a cursor this server gave out");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (side, id) = text.split_once(':').ok_or_else(bad)?;
        let id = uuid::Uuid::try_parse(id).map_err(|_| bad())?.to_string();
        match side {
            "n" => Ok(Self { newer: true, id }),
            "o" => Ok(Self { newer: false, id }),
            _ => Err(bad()),
        }
    }
}

/// What a listing keeps, and which index it walks to find it.
#[derive(Debug)]
pub(super) struct Filter {
    /// The caller's organization: nothing of another is ever kept.
    pub org: String,
    pub script_id: Option<String>,
    pub status: Option<ExecutionStatus>,
    pub trigger: Option<Trigger>,
    /// Exclusive bounds in the stored form (RFC 3339, UTC, milliseconds).
    pub created_after: Option<String>,
    pub created_before: Option<String>,
}

impl Filter {
    pub fn keeps(&self, e: &ExecutionRecord) -> bool {
        e.org() == self.org
            && self
                .script_id
                .as_ref()
                .is_none_or(|id| e.script_id.as_ref() == Some(id))
            && self.status.is_none_or(|s| e.status == s)
            && self.trigger.is_none_or(|t| e.trigger == t)
            && self
                .created_after
                .as_ref()
                .is_none_or(|t| e.created_at > *t)
            && self
                .created_before
                .as_ref()
                .is_none_or(|t| e.created_at < *t)
    }

    /// The smallest of the indexes the filter names (by their counters):
    /// the organization's, the script's (within it, as the script is) or
    /// the status's (across organizations, so only when smaller).
    fn index(&self, store: &dyn Store) -> ExecutionIndex {
        let mut named = vec![ExecutionIndex::Org(self.org.clone())];
        named.extend(
            self.script_id
                .clone()
                .map(|id| ExecutionIndex::Script(Some(id))),
        );
        named.extend(self.status.map(ExecutionIndex::Status));
        named
            .into_iter()
            .min_by_key(|index| store.count_executions(index))
            .unwrap_or(ExecutionIndex::All)
    }

    /// The total when an index's counter is it: no filter beyond one index
    /// that holds only the organization's executions (a status's does
    /// while the organization has every execution of the node).
    async fn counted_total(&self, store: &dyn Store) -> Option<u64> {
        let org = store.count_executions(&ExecutionIndex::Org(self.org.clone()));
        let alone = org == store.count_executions(&ExecutionIndex::All);
        let index = match (&self.script_id, self.status) {
            (None, None) => ExecutionIndex::Org(self.org.clone()),
            // Another organization's script id counts nothing here.
            (Some(id), None) if store.script(&self.org, id).await.ok().flatten().is_some() => {
                ExecutionIndex::Script(Some(id.clone()))
            }
            (None, Some(status)) if alone => ExecutionIndex::Status(status),
            _ => return None,
        };
        let plain =
            self.trigger.is_none() && self.created_after.is_none() && self.created_before.is_none();
        plain.then(|| store.count_executions(&index))
    }

    fn walk(&self, store: &dyn Store, newest_first: bool, after: Option<String>) -> ExecutionWalk {
        let mut walk = ExecutionWalk::new(self.index(store), newest_first);
        walk.after = after;
        walk.created_from_ms = self
            .created_after
            .as_deref()
            .and_then(unix_ms)
            .map(|ms| ms.saturating_sub(ID_TIME_SLACK_MS));
        walk.created_until_ms = self
            .created_before
            .as_deref()
            .and_then(unix_ms)
            .map(|ms| ms.saturating_add(ID_TIME_SLACK_MS));
        walk
    }
}

/// An RFC 3339 time as Unix ms; `None` before 1970.
pub(super) fn unix_ms(rfc3339: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// An RFC 3339 time in the stored form (UTC, milliseconds), so stored
/// timestamps compare as strings: any offset and any year from 0000 to
/// 9999 (what the document's `date-time` allows), or the looser form
/// without a zone (`2026-01-02 03:04:05`, read as UTC).
pub(super) fn normalized_time(
    field: &str,
    value: Option<String>,
) -> Result<Option<String>, ApiError> {
    value
        .map(|v| {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&v) {
                use chrono::Datelike as _;
                let utc = t.with_timezone(&chrono::Utc);
                // An offset can carry a time out of the four-digit years,
                // which would not compare as strings: the nearest one that does.
                return Ok(match utc.year() {
                    ..0 => "0000-01-01T00:00:00.000Z".into(),
                    10_000.. => "9999-12-31T23:59:59.999Z".into(),
                    _ => utc.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                });
            }
            humantime::parse_rfc3339_weak(&v)
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 time: {e}")))
        })
        .transpose()
}

/// How the client asked to page.
#[derive(Debug)]
enum Paging {
    /// `page`/`size` or `offset`/`limit`: skips, and answers totals.
    Skip {
        page: Option<Page>,
        offset: usize,
        size: usize,
    },
    Cursor {
        from: Option<Cursor>,
        limit: usize,
    },
}

fn size(field: &str, value: Option<usize>) -> Result<usize, ApiError> {
    let size = value.unwrap_or(20);
    if (1..=MAX_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be between 1 and {MAX_SIZE}"),
        ))
    }
}

impl ListQuery {
    fn split(self, org: &str) -> Result<(Paging, Filter), ApiError> {
        let by_page = self.page.is_some() || self.size.is_some();
        let paging = match (by_page, self.offset, self.cursor) {
            (true, None, None) if self.limit.is_none() => {
                let page = Page::new(PageQuery {
                    page: self.page,
                    size: self.size,
                })?;
                Paging::Skip {
                    page: Some(page),
                    offset: page.skip(),
                    size: page.size,
                }
            }
            (false, Some(offset), None) => Paging::Skip {
                page: None,
                offset,
                size: size("limit", self.limit)?,
            },
            (false, None, cursor) if cursor.is_some() || self.limit.is_some() => Paging::Cursor {
                from: cursor.as_deref().map(Cursor::decode).transpose()?,
                limit: size("limit", self.limit)?,
            },
            // No paging asked for: the first page by number, as before cursors.
            (false, None, None) => {
                let page = Page::new(PageQuery {
                    page: None,
                    size: None,
                })?;
                Paging::Skip {
                    page: Some(page),
                    offset: 0,
                    size: page.size,
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    "cursor",
                    "page with one of: page and size, limit and offset, or cursor and limit",
                ));
            }
        };
        if let Paging::Skip { page, offset, .. } = &paging
            && *offset > MAX_SKIP
        {
            return Err(ApiError::invalid(
                if page.is_some() { "page" } else { "offset" },
                format!("pages past the first {MAX_SKIP} executions are read by cursor"),
            ));
        }
        if self.script_id.as_deref() == Some("") {
            return Err(ApiError::invalid("script_id", "must not be empty"));
        }
        let filter = Filter {
            org: org.to_owned(),
            script_id: self.script_id,
            status: self.status,
            trigger: self.trigger,
            created_after: normalized_time("created_after", self.created_after)?,
            created_before: normalized_time("created_before", self.created_before)?,
        };
        Ok((paging, filter))
    }
}

/// Reads one page; blocking (it walks the store), so run off the async threads.
pub(super) async fn page(
    store: &dyn Store,
    org: &str,
    query: ListQuery,
) -> Result<Listing<ExecutionRecord>, ApiError> {
    let (paging, filter) = query.split(org)?;
    match paging {
        Paging::Skip { page, offset, size } => skip_page(store, &filter, page, offset, size).await,
        Paging::Cursor { from, limit } => {
            cursor_page(store, &filter, from, limit, SCAN_BUDGET).await
        }
    }
}

async fn skip_page(
    store: &dyn Store,
    filter: &Filter,
    page: Option<Page>,
    offset: usize,
    size: usize,
) -> Result<Listing<ExecutionRecord>, ApiError> {
    let counted = filter.counted_total(store).await;
    let (mut data, mut matched) = (Vec::new(), 0usize);
    store
        .walk_executions(&filter.walk(store, true, None), &mut |e| {
            if !filter.keeps(&e) {
                return ControlFlow::Continue(());
            }
            matched += 1;
            if matched > offset && data.len() < size {
                data.push(e);
            } else if matched > offset && counted.is_some() {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .await?;
    let total = counted.map_or(matched, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let next_cursor = (offset + data.len() < total)
        .then(|| data.last())
        .flatten()
        .map(|last| {
            Cursor {
                newer: false,
                id: last.id.clone(),
            }
            .encode()
        });
    let pagination = match page {
        Some(page) => page.pagination(total),
        None => Pagination {
            size,
            offset: Some(offset),
            total_elements: Some(total),
            total_pages: Some(total.div_ceil(size)),
            has_next: offset + data.len() < total,
            has_previous: offset > 0,
            ..Pagination::default()
        },
    };
    Ok(Listing {
        data,
        pagination: Pagination {
            next_cursor,
            ..pagination
        },
    })
}

async fn cursor_page(
    store: &dyn Store,
    filter: &Filter,
    from: Option<Cursor>,
    limit: usize,
    budget: usize,
) -> Result<Listing<ExecutionRecord>, ApiError> {
    let newer = from.as_ref().is_some_and(|c| c.newer);
    let walk = filter.walk(store, !newer, from.as_ref().map(|c| c.id.clone()));
    let (mut found, mut read) = (Vec::new(), 0usize);
    // Where a further page in the walk's direction resumes, if there may be one.
    let mut resume: Option<String> = None;
    store
        .walk_executions(&walk, &mut |e| {
            read += 1;
            if filter.keeps(&e) {
                if found.len() == limit {
                    // One past the page: the next page starts after its last.
                    resume = found.last().map(|last: &ExecutionRecord| last.id.clone());
                    return ControlFlow::Break(());
                }
                found.push(e);
            } else if read >= budget {
                // Read all it may: the next page starts after what was read.
                resume = Some(e.id);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .await?;
    let further = resume.map(|id| Cursor { newer, id }.encode());
    let (next_cursor, prev_cursor) = if newer {
        found.reverse();
        let older = found
            .last()
            .map(|e| e.id.clone())
            .or(from.map(|c| c.id))
            .map(|id| Cursor { newer: false, id }.encode());
        (older, further)
    } else {
        let back = from.is_some().then(|| found.first()).flatten();
        let newer_cursor = back.map(|e| {
            Cursor {
                newer: true,
                id: e.id.clone(),
            }
            .encode()
        });
        (further, newer_cursor)
    };
    Ok(Listing {
        data: found,
        pagination: Pagination {
            size: limit,
            has_next: next_cursor.is_some(),
            has_previous: prev_cursor.is_some(),
            next_cursor,
            prev_cursor,
            ..Pagination::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::executions::ExecutionStore as _;
    use crate::store::testing::{execution, id_at};

    #[test]
    fn times_take_any_offset_and_year_and_compare_as_stored() {
        let at = |v: &str| normalized_time("t", Some(v.into())).unwrap().unwrap();
        assert_eq!(at("2026-01-02T03:04:05Z"), "2026-01-02T03:04:05.000Z");
        assert_eq!(
            at("2026-01-02T03:04:05.5+02:00"),
            "2026-01-02T01:04:05.500Z"
        );
        assert_eq!(at("2026-01-02 03:04:05"), "2026-01-02T03:04:05.000Z");
        // Before any stored time, and so before every one.
        assert_eq!(at("0001-01-04T00:00:00.0Z"), "0001-01-04T00:00:00.000Z");
        assert!(at("0001-01-04T00:00:00.0Z") < crate::time_of_ms(0));
        assert_eq!(at("9999-12-31T23:00:00-05:00"), "9999-12-31T23:59:59.999Z");
        assert_eq!(at("0000-01-01T00:00:00+01:00"), "0000-01-01T00:00:00.000Z");
        assert!(normalized_time("t", Some("yesterday".into())).is_err());
    }

    #[tokio::test]
    async fn a_cursor_page_stops_at_its_read_budget_and_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path(), 8 << 20).unwrap();
        let mut ids: Vec<String> = (0..25u64).map(|i| id_at(1_000 + i, 0)).collect();
        for id in &ids {
            let mut record = execution(id, Some("s"), ExecutionStatus::Completed);
            // One in ten was scheduled: the filter below keeps only those.
            if id == &ids[3] || id == &ids[13] || id == &ids[23] {
                record.trigger = Trigger::Schedule;
            }
            store.put_execution(&record).await.unwrap();
        }
        ids.reverse();
        let filter = Filter {
            org: crate::store::orgs::DEFAULT_ORG.into(),
            script_id: None,
            status: None,
            trigger: Some(Trigger::Schedule),
            created_after: None,
            created_before: None,
        };
        let (mut seen, mut pages, mut from) = (Vec::new(), 0, None);
        loop {
            let page = cursor_page(&store, &filter, from, 20, 10).await.unwrap();
            pages += 1;
            seen.extend(page.data.into_iter().map(|e| e.id));
            match page.pagination.next_cursor {
                Some(next) => from = Some(Cursor::decode(&next).unwrap()),
                None => break,
            }
        }
        // 25 records at 10 reads a page: three pages, every match once.
        assert_eq!(pages, 3);
        assert_eq!(seen, [ids[1].clone(), ids[11].clone(), ids[21].clone()]);
    }

    #[test]
    fn cursors_round_trip_and_forged_ones_are_refused() {
        let cursor = Cursor {
            newer: true,
            id: uuid::Uuid::now_v7().to_string(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for forged in [
            "",
            "!!",
            "bzpub3QtYS11dWlk",
            &URL_SAFE_NO_PAD.encode("x:0190"),
        ] {
            assert!(Cursor::decode(forged).is_err(), "{forged}");
        }
    }
}
