//! [`KernelString`]: a string the kernel reads through a pointer, in a
//! buffer it can always read whole; and what may go in one.

use std::fmt;

use super::KERNEL_STRING_LEN;

/// Why a string cannot go in a [`KernelString`], or cannot be a
/// DEV_USER_VERSION. Worded to follow "the string is unusable: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelStringError {
    /// The string is empty.
    #[error("it is empty")]
    Empty,
    /// The string and its NUL do not fit the buffer.
    #[error(
        "it is {len} bytes long; at most {} fit the buffer passed to the kernel",
        KERNEL_STRING_LEN - 1
    )]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside printable ASCII and space.
    #[error("it contains {0:?} (only printable ASCII is allowed)")]
    NotPrintable(char),
    /// A space in a DEV_USER_VERSION.
    #[error("it contains ' ' (a DEV_USER_VERSION has no spaces)")]
    SpaceInVersion,
}

/// A NUL-terminated string in a fixed 128-byte buffer, for the kernel's
/// `version_str` / `license_str` pointers: the kernel copies a fixed
/// [`DEV_USER_VERSION_COPY_LEN`] bytes whatever the string's length, so a
/// short string at the end of a mapping could fault; this buffer is always
/// fully readable. Its address is stable while the value is not moved.
///
/// [`DEV_USER_VERSION_COPY_LEN`]: crate::scst::abi::DEV_USER_VERSION_COPY_LEN
#[derive(Clone)]
pub struct KernelString {
    bytes: [u8; KERNEL_STRING_LEN],
    len: usize,
}

impl KernelString {
    /// `s` plus NUL padding. Fails (saying why) if `s` is empty, longer
    /// than 127 bytes, or holds a byte outside printable ASCII and space
    /// (license strings such as `"GPL v2"` have spaces).
    pub fn new(s: &str) -> Result<Self, KernelStringError> {
        check_kernel_string(s)?;
        let mut bytes = [0u8; KERNEL_STRING_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self {
            bytes,
            len: s.len(),
        })
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // Only ASCII was copied in (checked in `new`).
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// The whole buffer, NUL padding included.
    pub fn buffer(&self) -> &[u8; KERNEL_STRING_LEN] {
        &self.bytes
    }

    /// The buffer's address, as the ABI's `aligned_u64` pointer.
    pub fn addr(&self) -> u64 {
        self.bytes.as_ptr() as u64
    }
}

impl fmt::Debug for KernelString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KernelString").field(&self.as_str()).finish()
    }
}

/// Whether `s` can go in a [`KernelString`]: 1..=127 bytes of printable
/// ASCII or spaces (no NUL, no control characters).
pub fn check_kernel_string(s: &str) -> Result<(), KernelStringError> {
    if s.is_empty() {
        return Err(KernelStringError::Empty);
    }
    if s.len() >= KERNEL_STRING_LEN {
        return Err(KernelStringError::TooLong { len: s.len() });
    }
    if let Some(c) = s.chars().find(|&c| !(c.is_ascii_graphic() || c == ' ')) {
        return Err(KernelStringError::NotPrintable(c));
    }
    Ok(())
}

/// Whether `s` can be a DEV_USER_VERSION: a [`check_kernel_string`] string
/// without spaces (SCST's are `<name><sha1><sha1>`).
pub fn check_version_string(s: &str) -> Result<(), KernelStringError> {
    check_kernel_string(s)?;
    if s.contains(' ') {
        return Err(KernelStringError::SpaceInVersion);
    }
    Ok(())
}
