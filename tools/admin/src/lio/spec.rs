//! What `create` is given: [`CreateSpec`] with its defaults and checks,
//! the name rules, and the tcm_loop WWNs.

use dataplane::lun::DEFAULT_MAX_TRANSFER_BYTES;

use super::error::LioError;

/// The subtype `dataplane serve` handles unless configured otherwise.
pub const DEFAULT_SUBTYPE: &str = "dataplane";

/// Logical block sizes `create` accepts.
pub const BLOCK_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// The kernel's limit on `dev_config` (`TCMU_CONFIG_LEN`, NUL included).
const DEV_CONFIG_MAX: usize = 255;

/// What to create: one TCMU device, optionally exported through tcm_loop.
/// [`CreateSpec::new`] fills in the defaults of `dataplane lio create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// The configfs device name (`core/user_<hba>/<name>`).
    pub name: String,
    /// The bdev that `dataplane serve` serves it from (`dev_config`'s cfg).
    pub bdev: String,
    /// Size in bytes; a non-zero multiple of `block_size`.
    pub size: u64,
    /// Logical block size: 512, 1024, 2048 or 4096.
    pub block_size: u32,
    /// The TCMU HBA index N of `core/user_N`.
    pub hba: u32,
    /// Handler subtype (`dev_config=<subtype>/<bdev>`).
    pub subtype: String,
    /// `hw_max_sectors`: the largest command in blocks; `None` is the LUN's
    /// default MAXIMUM TRANSFER LENGTH ([`DEFAULT_MAX_TRANSFER_BYTES`]) in
    /// blocks of `block_size`, which is what `dataplane serve` enforces
    /// and reports in VPD B0 unless the bdev's limit is lower.
    pub max_sectors: Option<u32>,
    /// `max_data_area_mb`: the ring's data area.
    pub max_data_area_mb: u32,
    /// `attrib/cmd_time_out` in seconds (0 = no timeout: a dead handler then
    /// hangs I/O and LUN removal forever).
    pub cmd_time_out: u32,
    /// Export through tcm_loop.
    pub loopback: bool,
    /// tcm_loop target WWN (`naa.` + 16 hex digits); `None` derives one from
    /// the HBA and name ([`default_wwn`]).
    pub wwn: Option<String>,
    /// Where the tcm_loop target finishes its commands
    /// (`param/cmd_completion_affinity` of the WWN).
    pub completion_cpu: CompletionCpu,
}

/// Which CPU LIO runs a command's completion work on (the target WWN's
/// `param/cmd_completion_affinity`, Linux 5.14 and later). It applies to
/// every LUN of the WWN.
///
/// Measured in the VM test's 2-vCPU TCG guest (fio on CPU 0, the reactor on
/// CPU 1, 4 KiB randread, three alternating rounds against rd_mcp):
/// `Completer` ran QD 32 at 0.95-1.14x rd_mcp instead of 0.74-0.87x
/// (the initiator's CPU, the limit there, no longer runs the completions),
/// and QD 1 at 0.37-0.44x instead of 0.49-0.57x (the completion work now
/// preempts the reactor on its core before the initiator is woken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompletionCpu {
    /// The CPU that submitted the command (the kernel's default, -1):
    /// nothing is written.
    #[default]
    Submitter,
    /// The CPU that completes it (-2): with `dataplane serve`, the
    /// reactor's core, which rings the doorbell.
    Completer,
    /// This CPU.
    Cpu(u32),
}

impl CompletionCpu {
    /// The value for `cmd_completion_affinity`, `None` for the default.
    pub fn affinity(self) -> Option<String> {
        match self {
            CompletionCpu::Submitter => None,
            CompletionCpu::Completer => Some("-2".to_owned()),
            CompletionCpu::Cpu(cpu) => Some(cpu.to_string()),
        }
    }
}

impl std::str::FromStr for CompletionCpu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "submitter" => Ok(CompletionCpu::Submitter),
            "completer" => Ok(CompletionCpu::Completer),
            _ => s
                .parse()
                .map(CompletionCpu::Cpu)
                .map_err(|_| format!("{s:?} is not \"submitter\", \"completer\" or a CPU number")),
        }
    }
}

impl CreateSpec {
    /// A spec with the defaults of `dataplane lio create`: block size 512,
    /// HBA 0, subtype `dataplane`, max sectors the LUN's default transfer
    /// (1 MiB: 2048 at 512 B), 64 MiB data area, 30 s command timeout, no
    /// loopback.
    pub fn new(name: impl Into<String>, bdev: impl Into<String>, size: u64) -> Self {
        Self {
            name: name.into(),
            bdev: bdev.into(),
            size,
            block_size: 512,
            hba: 0,
            subtype: DEFAULT_SUBTYPE.to_owned(),
            max_sectors: None,
            max_data_area_mb: 64,
            cmd_time_out: 30,
            loopback: false,
            wwn: None,
            completion_cpu: CompletionCpu::Submitter,
        }
    }

    /// `hw_max_sectors` to write: `max_sectors`, or the LUN's default
    /// transfer in blocks (at least one).
    pub fn max_sectors(&self) -> u32 {
        self.max_sectors
            .unwrap_or((DEFAULT_MAX_TRANSFER_BYTES / self.block_size.max(1)).max(1))
    }

    /// `<subtype>/<bdev>`.
    pub fn dev_config(&self) -> String {
        format!("{}/{}", self.subtype, self.bdev)
    }

    /// Checks every value; the error names the value and says what is wrong.
    pub fn validate(&self) -> Result<(), LioError> {
        validate_name("device name", &self.name)?;
        validate_name("bdev name", &self.bdev)?;
        validate_name("subtype", &self.subtype)?;
        let dev_config = self.dev_config();
        if dev_config.len() > DEV_CONFIG_MAX {
            return Err(LioError::Invalid(format!(
                "dev_config {dev_config:?} is {} bytes; the kernel keeps at most {DEV_CONFIG_MAX}",
                dev_config.len()
            )));
        }
        if !BLOCK_SIZES.contains(&self.block_size) {
            return Err(LioError::Invalid(format!(
                "block size {} is not one of 512, 1024, 2048, 4096",
                self.block_size
            )));
        }
        if self.size == 0 {
            return Err(LioError::Invalid("size must be greater than zero".into()));
        }
        if !self.size.is_multiple_of(u64::from(self.block_size)) {
            return Err(LioError::Invalid(format!(
                "size {} is not a multiple of the block size {}",
                self.size, self.block_size
            )));
        }
        if self.max_sectors() == 0 {
            return Err(LioError::Invalid(
                "max sectors must be greater than zero".into(),
            ));
        }
        if self.max_data_area_mb == 0 {
            return Err(LioError::Invalid(
                "max data area must be at least 1 MiB".into(),
            ));
        }
        let largest = u64::from(self.max_sectors()) * u64::from(self.block_size);
        if largest > u64::from(self.max_data_area_mb) << 20 {
            return Err(LioError::Invalid(format!(
                "max sectors {} x block size {} = {largest} bytes per command does not fit \
                 the {} MiB data area",
                self.max_sectors(),
                self.block_size,
                self.max_data_area_mb
            )));
        }
        if let Some(wwn) = &self.wwn {
            parse_wwn(wwn)?;
        }
        Ok(())
    }
}

/// Checks a name that goes into a configfs path or `dev_config`: not empty,
/// at most 255 bytes, not `.` or `..`, and none of `/` (a path separator),
/// `:` (not allowed in `dev_config`), `,` (separates `control` items),
/// whitespace or control characters.
pub fn validate_name(what: &str, name: &str) -> Result<(), LioError> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > 255 {
        format!("is {} bytes long (at most 255)", name.len())
    } else if name == "." || name == ".." {
        "is not a name".to_owned()
    } else if let Some(c) = name
        .chars()
        .find(|&c| matches!(c, '/' | ':' | ',') || c.is_whitespace() || c.is_control())
    {
        format!("contains {c:?} (not allowed: '/', ':', ',', whitespace)")
    } else {
        return Ok(());
    };
    Err(LioError::Invalid(format!("{what} {name:?} {why}")))
}

/// Checks a tcm_loop WWN of the form `naa.` + 16 hex digits and returns it
/// in lower case.
pub fn parse_wwn(wwn: &str) -> Result<String, LioError> {
    let ok = wwn
        .strip_prefix("naa.")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(wwn.to_ascii_lowercase())
    } else {
        Err(LioError::Invalid(format!(
            "WWN {wwn:?} is not of the form naa.<16 hex digits> (e.g. naa.5001405000000001)"
        )))
    }
}

/// The default tcm_loop target WWN of device `user_<hba>/<name>`:
/// `naa.5001405` (the NAA-5 prefix LIO uses) + 9 hex digits of the FNV-1a
/// hash of `<hba>/<name>`. Deterministic, so a re-create gets the same WWN.
pub fn default_wwn(hba: u32, name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{hba}/{name}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("naa.5001405{:09x}", hash & 0xf_ffff_ffff)
}

/// The initiator WWN written to `nexus` for target WWN `wwn`: the same with
/// the last hex digit's lowest bit flipped (so it always differs).
pub fn initiator_wwn(wwn: &str) -> String {
    let mut out = wwn.to_owned();
    if let Some(last) = out.pop() {
        let digit = last.to_digit(16).unwrap_or(0) ^ 1;
        out.push(char::from_digit(digit, 16).unwrap_or('1'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["disk0", "ram-1", "a.b_c", "X"] {
            validate_name("bdev name", good).unwrap();
        }
        let msg = |n: &str| validate_name("bdev name", n).unwrap_err().to_string();
        assert_eq!(msg(""), "bdev name \"\" is empty");
        assert_eq!(
            msg("a/b"),
            "bdev name \"a/b\" contains '/' (not allowed: '/', ':', ',', whitespace)"
        );
        assert!(msg("a:b").contains("contains ':'"));
        assert!(msg("a,b").contains("contains ','"));
        assert!(msg("a b").contains("contains ' '"));
        assert!(msg("a\nb").contains("contains '\\n'"));
        assert_eq!(msg(".."), "bdev name \"..\" is not a name");
        assert!(msg(&"x".repeat(256)).contains("is 256 bytes long (at most 255)"));
    }

    #[test]
    fn specs_are_validated() {
        let spec = CreateSpec::new("disk0", "ram0", 1 << 30);
        spec.validate().unwrap();
        assert_eq!(spec.dev_config(), "dataplane/ram0");
        let msg = |f: &dyn Fn(&mut CreateSpec)| {
            let mut s = spec.clone();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert_eq!(msg(&|s| s.size = 0), "size must be greater than zero");
        assert_eq!(
            msg(&|s| s.size = 1000),
            "size 1000 is not a multiple of the block size 512"
        );
        assert_eq!(
            msg(&|s| {
                s.block_size = 4096;
                s.size = 4096 * 3 + 512;
            }),
            "size 12800 is not a multiple of the block size 4096"
        );
        assert_eq!(
            msg(&|s| s.block_size = 520),
            "block size 520 is not one of 512, 1024, 2048, 4096"
        );
        assert_eq!(
            msg(&|s| s.max_sectors = Some(0)),
            "max sectors must be greater than zero"
        );
        assert_eq!(
            msg(&|s| s.max_data_area_mb = 0),
            "max data area must be at least 1 MiB"
        );
        assert_eq!(
            msg(&|s| {
                s.max_data_area_mb = 1;
                s.max_sectors = Some(4096);
            }),
            "max sectors 4096 x block size 512 = 2097152 bytes per command does not fit the 1 MiB data area"
        );
        assert!(msg(&|s| s.name = "a/b".into()).starts_with("device name \"a/b\""));
        assert!(msg(&|s| s.bdev = String::new()).starts_with("bdev name \"\" is empty"));
        assert!(msg(&|s| s.subtype = "x:y".into()).starts_with("subtype \"x:y\""));
        assert!(msg(&|s| {
            s.subtype = "s".repeat(200);
            s.bdev = "b".repeat(60);
        })
        .contains("is 261 bytes; the kernel keeps at most 255"));
        assert!(msg(&|s| s.wwn = Some("naa.123".into())).contains("naa.<16 hex digits>"));
        for block_size in BLOCK_SIZES {
            let mut s = spec.clone();
            s.block_size = block_size;
            s.validate().unwrap();
        }
    }

    /// Without `--max-sectors`, `hw_max_sectors` is the LUN's default
    /// MAXIMUM TRANSFER LENGTH in blocks of the device's block size, so the
    /// limit LIO shows, the one `dataplane serve` derives from it and the
    /// one VPD B0 reports are one value at every block size.
    #[test]
    fn default_max_sectors_is_the_luns_default_transfer() {
        for block_size in BLOCK_SIZES {
            let mut s = CreateSpec::new("disk0", "ram0", 1 << 30);
            s.block_size = block_size;
            assert_eq!(
                u64::from(s.max_sectors()) * u64::from(block_size),
                u64::from(dataplane::lun::DEFAULT_MAX_TRANSFER_BYTES),
                "{block_size}"
            );
            s.max_sectors = Some(8);
            assert_eq!(s.max_sectors(), 8);
        }
    }

    #[test]
    fn wwns() {
        assert_eq!(
            parse_wwn("naa.5001405ABCDEF012").unwrap(),
            "naa.5001405abcdef012"
        );
        for bad in [
            "",
            "naa.",
            "naa.5001405abcdef01",
            "naa.5001405abcdef0123",
            "iqn.2003-01.x",
            "naa.5001405abcdef01g",
            "NAA.5001405abcdef012",
        ] {
            assert!(parse_wwn(bad).is_err(), "{bad}");
        }
        let w = default_wwn(0, "disk0");
        assert!(w.starts_with("naa.5001405"), "{w}");
        assert_eq!(parse_wwn(&w).unwrap(), w);
        assert_eq!(default_wwn(0, "disk0"), w, "deterministic");
        assert_ne!(default_wwn(1, "disk0"), w);
        assert_ne!(default_wwn(0, "disk1"), w);
        // FNV-1a of "0/disk0", low 36 bits.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"0/disk0" {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        assert_eq!(w, format!("naa.5001405{:09x}", h & 0xfffffffff));

        assert_eq!(
            initiator_wwn("naa.5001405000000001"),
            "naa.5001405000000000"
        );
        assert_eq!(
            initiator_wwn("naa.500140500000000e"),
            "naa.500140500000000f"
        );
        assert_eq!(
            initiator_wwn("naa.500140500000000f"),
            "naa.500140500000000e"
        );
    }
}
