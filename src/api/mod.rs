//! Kubernetes API conventions shared by every group we serve: request parsing,
//! `metav1.Status` errors, content negotiation, selectors, paging, Table output,
//! discovery and OpenAPI. A group only supplies its objects, columns and schemas.

pub mod discovery;
pub mod endpoint;
pub mod field_selector;
pub mod label_selector;
pub mod list_options;
pub mod meta;
pub mod negotiate;
pub mod openapi;
pub mod paging;
pub mod protobuf;
pub mod quantity;
pub mod query;
pub mod request_info;
pub mod resource;
pub mod response;
pub mod status;
pub mod table;
pub mod time;
pub mod watch;
pub mod watch_chunks;
