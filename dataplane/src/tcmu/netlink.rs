//! TCM-USER generic netlink listener (being written).
