//! SCIM 2.0 (stub while being written).
use crate::server::Ca;
use std::sync::Arc;
pub fn router() -> axum::Router<Arc<Ca>> {
    axum::Router::new()
}
