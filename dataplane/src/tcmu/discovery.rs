//! TCMU device discovery (being written).
