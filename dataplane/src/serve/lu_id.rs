//! Stable logical unit identifiers (VPD 0x83) for served devices: FNV-1a
//! 64 of the device's name within a namespace, the same in every build and
//! run (unlike std's hasher), never 0.

use crate::tcmu::discovery::TcmuUioName;

/// FNV-1a 64 of `namespace` followed by `name`, at least 1.
fn stable(namespace: &[u8], name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.iter().chain(name.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The id of a LIO (TCMU) device: its HBA number (little-endian) and name.
pub(super) fn tcmu(name: &TcmuUioName) -> u64 {
    stable(&name.hba.to_le_bytes(), &name.name)
}

/// The id of an `[[scst]]` device: `scst/<name>`, so it differs from the id
/// of a TCMU device of the same name.
pub(super) fn scst(name: &str) -> u64 {
    stable(b"scst/", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lu_ids_are_stable_and_distinct() {
        // FNV-1a 64 of "scst/disk0": the same in every build and run.
        assert_eq!(scst("disk0"), LU_ID_DISK0);
        assert_ne!(scst("disk1"), LU_ID_DISK0);
        assert_ne!(scst(""), 0);
        // FNV-1a 64 of the HBA number 0 (4 bytes, little-endian) and "disk0".
        let name = TcmuUioName::parse("tcm-user/0/disk0/dataplane/ram0").unwrap();
        assert_eq!(tcmu(&name), TCMU_LU_ID_DISK0);
        assert_ne!(tcmu(&name), scst("disk0"));
    }

    const LU_ID_DISK0: u64 = 0xcc7e_6a26_1108_1a50;
    const TCMU_LU_ID_DISK0: u64 = 0x8215_b9b9_0f97_f0cc;
}
