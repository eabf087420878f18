//! `dataplane lio`: LIO configfs management (being written).
