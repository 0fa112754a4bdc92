//! The ReceiverPool controller: `controller` reconciles a pool from the Webhooks that name
//! it; `children` (pure) builds the pool's objects and its configuration.

pub mod children;
pub mod controller;
