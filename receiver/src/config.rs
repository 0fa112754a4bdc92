//! The receiver's configuration file: the contract with the operator, kept in the
//! `hookwarden-api` crate that both build on.

pub use hookwarden_api::config::*;
