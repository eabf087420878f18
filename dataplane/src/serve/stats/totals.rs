//! [`DeviceTotals`]: a device's counters since attach, read without
//! touching the interval state of the statistics reports (the control
//! socket reads these between two reports).

use serde::Serialize;

use super::DeviceIdentity;

/// One device's counters since it was attached, and where it is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceTotals {
    /// Which device, and where (serialized as its own keys).
    #[serde(flatten)]
    pub device: DeviceIdentity,
    /// Commands received (TCMU: ring entries; SCST: EXEC subcommands).
    pub received_total: u64,
    /// Commands completed.
    pub commands_total: u64,
    /// Data bytes of the commands received, both directions.
    pub data_bytes_total: u64,
    /// Data bytes sent to the initiator (reads).
    pub data_in_bytes_total: u64,
    /// Doorbells (TCMU) or REPLY_AND_GET_MULTI ioctls (SCST).
    pub doorbells_total: u64,
    /// Commands aborted by task management.
    pub aborts_total: u64,
    /// Why the device stopped talking to the kernel, while it is faulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}
