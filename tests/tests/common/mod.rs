//! Shared by the integration tests that include it (`mod common;`).

pub mod counting_alloc;
