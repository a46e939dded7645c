//! `?page=1&size=20` and the `{"data", "pagination"}` envelope of lists
//! (executions also page by cursor: `api/executions/list.rs`).

use serde::{Deserialize, Serialize};

use super::ApiError;

pub const MAX_SIZE: usize = 100;

/// Puts the bounds [`Page::new`] and the cursor pages enforce into every
/// operation's `page`, `size` and `limit` parameters (a `usize` alone says
/// only `minimum: 0`).
pub fn document_bounds(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::Number;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                let RefOr::T(parameter) = parameter else {
                    continue;
                };
                // A page number is read as a usize: past it is a 400.
                let (least, most) = match parameter.name.as_str() {
                    "page" => (1, usize::MAX),
                    "size" | "limit" => (1, MAX_SIZE),
                    "offset" => (0, super::executions::MAX_SKIP),
                    _ => continue,
                };
                if let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema {
                    schema.minimum = Some(Number::UInt(least));
                    schema.maximum = Some(Number::UInt(most));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct PageQuery {
    pub page: Option<usize>,
    pub size: Option<usize>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: usize,
    pub size: usize,
}

impl Page {
    /// # Errors
    ///
    /// `VALIDATION_ERROR` for a page below 1 or a size outside 1..=100.
    pub fn new(query: PageQuery) -> Result<Self, ApiError> {
        let page = query.page.unwrap_or(1);
        let size = query.size.unwrap_or(20);
        if page == 0 {
            return Err(ApiError::invalid("page", "must be at least 1"));
        }
        if !(1..=MAX_SIZE).contains(&size) {
            return Err(ApiError::invalid(
                "size",
                format!("must be between 1 and {MAX_SIZE}"),
            ));
        }
        Ok(Self { page, size })
    }

    pub fn skip(self) -> usize {
        (self.page - 1).saturating_mul(self.size)
    }

    pub fn envelope<T: Serialize>(self, data: Vec<T>, total: usize) -> Listing<T> {
        Listing {
            data,
            pagination: self.pagination(total),
        }
    }

    /// Where this page is among `total` records.
    pub fn pagination(self, total: usize) -> Pagination {
        let total_pages = total.div_ceil(self.size);
        Pagination {
            page: Some(self.page),
            size: self.size,
            total_elements: Some(total),
            total_pages: Some(total_pages),
            has_next: self.page < total_pages,
            has_previous: self.page > 1,
            ..Pagination::default()
        }
    }
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

/// Where a page is in its list. Pages by number have `page` and the
/// totals; pages by cursor (executions) have the cursors and no totals.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Pagination {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<usize>,
    /// The page's size (or `limit`).
    pub size: usize,
    /// The records skipped before this page (`offset`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_elements: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_pages: Option<usize>,
    /// Whether a next page may hold records.
    pub has_next: bool,
    pub has_previous: bool,
    /// `?cursor=` for the next (older) page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// `?cursor=` for the previous (newer) page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_count_and_flag_neighbours() {
        let page = Page::new(PageQuery {
            page: Some(2),
            size: Some(10),
        })
        .unwrap();
        assert_eq!(page.skip(), 10);
        let listing = page.envelope(vec![1; 10], 25);
        assert_eq!(listing.pagination.total_pages, Some(3));
        assert!(listing.pagination.has_next && listing.pagination.has_previous);
        let last = Page::new(PageQuery {
            page: Some(3),
            size: Some(10),
        })
        .unwrap()
        .envelope(vec![1; 5], 25);
        assert!(!last.pagination.has_next);
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(
            Page::new(PageQuery {
                page: Some(0),
                size: None
            })
            .is_err()
        );
        assert!(
            Page::new(PageQuery {
                page: None,
                size: Some(0)
            })
            .is_err()
        );
        assert!(
            Page::new(PageQuery {
                page: None,
                size: Some(101)
            })
            .is_err()
        );
        let empty = Page::new(PageQuery {
            page: None,
            size: None,
        })
        .unwrap()
        .envelope(Vec::<u8>::new(), 0);
        assert_eq!(
            (empty.pagination.total_pages, empty.pagination.has_next),
            (Some(0), false)
        );
    }
}
