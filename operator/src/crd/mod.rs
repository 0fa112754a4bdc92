//! The `Webhook` custom resource: its types live in the `hookwarden-api` crate (no I/O, shared
//! with the receiver and the tests); re-exported here.

pub use hookwarden_api::webhook::*;
