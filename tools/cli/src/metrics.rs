//! `--metrics-listen` of `serve` and `bench`: starts the metrics endpoint
//! ([`dataplane::serve::metrics`]) with an empty catalog for the caller to
//! fill.

use std::sync::Arc;

use anyhow::Result;
use dataplane::serve::metrics::{MetricsCatalog, MetricsServer};

/// Listens on `addr` and serves a new catalog, returned with the endpoint
/// (which stops when dropped).
pub fn listen(addr: &str) -> Result<(MetricsServer, Arc<MetricsCatalog>)> {
    let catalog = MetricsCatalog::new();
    let endpoint = MetricsServer::start(addr, Arc::clone(&catalog))?;
    Ok((endpoint, catalog))
}
