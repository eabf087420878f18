//! `dataplane serve` (being written).
