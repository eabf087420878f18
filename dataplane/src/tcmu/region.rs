//! The shared region: `[mailbox 128][command ring][data area]`.
//!
//! The mapping is shared with a less trusted party (the kernel, or a
//! kernel side on another thread of the same process) that writes parts of it concurrently. So this
//! type never hands out Rust references into the mapping: every access goes
//! through a bounds-checked accessor built on raw pointers
//! (`ptr::read_volatile`, `ptr::write_volatile`, `ptr::copy_nonoverlapping`),
//! and `cmd_head` / `cmd_tail` are accessed as atomics. Which bytes each side
//! may touch at a given time is governed by the ring protocol (head/tail with
//! acquire/release); these accessors only guarantee that no access leaves the
//! mapping, whatever offsets the other side wrote.

use std::fs::File;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::abi::{MB_CMDR_OFF, MB_CMDR_SIZE, MB_CMD_HEAD, MB_CMD_TAIL, MB_FLAGS, MB_VERSION};
use super::TcmuError;

/// A mapping of a TCMU region (mailbox + ring + data area). Cheap to clone;
/// the mapping lives until the last clone is dropped.
#[derive(Clone)]
pub struct SharedRegion {
    base: NonNull<u8>,
    len: usize,
    /// Keeps the mapping alive; never accessed through.
    _mapping: Arc<MmapRaw>,
    /// The pages behind the mapping are never replaced while it lives (a
    /// memfd of this process); false for a UIO mapping, whose data-area
    /// pages the kernel frees and replaces when it reclaims idle blocks.
    stable_pages: bool,
}

// SAFETY: a SharedRegion is an address range of a MAP_SHARED mapping kept
// alive by the Arc. It exposes no references into the memory, only
// bounds-checked volatile/atomic accesses, so using it from several threads is
// no different from several processes sharing the mapping: data races on
// plain bytes are excluded by the ring protocol, and a misbehaving peer can
// only produce garbage values, never an out-of-bounds access.
unsafe impl Send for SharedRegion {}
// SAFETY: see `Send`; all methods take `&self` and perform raw accesses only.
unsafe impl Sync for SharedRegion {}

impl std::fmt::Debug for SharedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegion")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish()
    }
}

/// Reads `/sys/class/uio/uioN/maps/map0/size` given the device's sysfs
/// directory, e.g. `/sys/class/uio/uio0`. The kernel prints it with `%pa`
/// (`0x` and hex digits); a plain decimal number is accepted too.
pub fn uio_map0_size(uio_sysfs_dir: &Path) -> Result<usize, TcmuError> {
    let path = uio_sysfs_dir.join("maps/map0/size");
    let err = |source| TcmuError::UioMapSize {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(err)?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => text.parse::<usize>(),
    };
    parsed.map_err(|e| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{text:?}: {e}"),
        ))
    })
}

impl SharedRegion {
    /// Maps exactly `len` bytes of `file` at offset 0, `MAP_SHARED`,
    /// read-write. For `/dev/uioN`, `len` must be the value of
    /// `maps/map0/size` (see [`uio_map0_size`]); the kernel refuses any other
    /// length. Offset 0 selects UIO map 0.
    pub fn map_file(file: &File, len: usize) -> Result<Self, TcmuError> {
        Self::map(file, len, false)
    }

    fn map(file: &File, len: usize, stable_pages: bool) -> Result<Self, TcmuError> {
        if len < super::abi::CMDR_OFF as usize {
            return Err(TcmuError::RegionTooSmall { len });
        }
        let mapping = MmapOptions::new()
            .offset(0)
            .len(len)
            .map_raw(file)
            .map_err(TcmuError::Map)?;
        Self::from_mapping(mapping, stable_pages)
    }

    /// Creates a zero-filled shared mapping of `len` bytes backed by a memfd
    /// (for a kernel side in the same process). It behaves like the UIO mapping: `MAP_SHARED`,
    /// page-aligned, pages allocated on first touch.
    pub fn anonymous(len: usize) -> Result<Self, TcmuError> {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        if len < super::abi::CMDR_OFF as usize {
            return Err(TcmuError::RegionTooSmall { len });
        }
        let fd = memfd_create(c"tcmu-region", MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(|e| TcmuError::Map(e.into()))?;
        let file = File::from(fd);
        file.set_len(len as u64).map_err(TcmuError::Map)?;
        // The memfd can be closed once mapped: the mapping keeps it alive.
        // Its pages are this process's and stay put.
        Self::map(&file, len, true)
    }

    fn from_mapping(mapping: MmapRaw, stable_pages: bool) -> Result<Self, TcmuError> {
        let len = mapping.len();
        let base = NonNull::new(mapping.as_mut_ptr())
            .ok_or(TcmuError::Map(std::io::Error::other("mmap returned NULL")))?;
        Ok(Self {
            base,
            len,
            _mapping: Arc::new(mapping),
            stable_pages,
        })
    }

    /// Whether the pages behind the mapping stay the same while it lives,
    /// so that they may be pinned (registered as io_uring fixed buffers):
    /// true for [`anonymous`](Self::anonymous) regions. A UIO mapping of a
    /// real TCMU device is not: target_core_user frees idle data-area
    /// blocks and allocates new pages for them later (`tcmu_blocks_release`,
    /// `find_free_blocks`), and a pinned old page would then receive reads
    /// the kernel never sees.
    pub fn pages_are_stable(&self) -> bool {
        self.stable_pages
    }

    /// Length of the whole mapping in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the mapping is empty (never, for a valid region).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the mapping. Dereferencing it is up to the caller.
    #[inline]
    pub fn base_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Pointer to `len` bytes at `offset`, if they lie inside the mapping.
    /// Does not dereference anything.
    #[inline]
    pub fn ptr_at(&self, offset: usize, len: usize) -> Result<*mut u8, TcmuError> {
        if offset > self.len || len > self.len - offset {
            return Err(TcmuError::OutOfBounds { offset, len });
        }
        // `wrapping_add` stays inside the mapping because of the check above.
        Ok(self.base.as_ptr().wrapping_add(offset))
    }

    #[inline]
    fn scalar_ptr<T>(&self, offset: usize) -> Result<*mut T, TcmuError> {
        let align = std::mem::align_of::<T>();
        if !offset.is_multiple_of(align) {
            return Err(TcmuError::Misaligned { offset, align });
        }
        // The base is page-aligned (mmap), so `offset` aligned means the
        // address is aligned.
        Ok(self.ptr_at(offset, std::mem::size_of::<T>())?.cast())
    }

    #[inline]
    fn read_scalar<T: Copy>(&self, offset: usize) -> Result<T, TcmuError> {
        let p = self.scalar_ptr::<T>(offset)?;
        // SAFETY: `p` is in bounds and aligned (checked above) and the mapping
        // is alive (held by `_mapping`). A volatile read of plain integer
        // bytes is valid for any bit pattern; the peer may write these bytes
        // concurrently only if it breaks the ring protocol, which yields a
        // garbage value that callers validate, never a reference.
        Ok(unsafe { ptr::read_volatile(p) })
    }

    #[inline]
    fn write_scalar<T: Copy>(&self, offset: usize, value: T) -> Result<(), TcmuError> {
        let p = self.scalar_ptr::<T>(offset)?;
        // SAFETY: `p` is in bounds and aligned and the mapping is alive and
        // writable (PROT_WRITE). The ring protocol gives us these bytes; no
        // Rust reference to them exists.
        unsafe { ptr::write_volatile(p, value) };
        Ok(())
    }

    /// Reads a byte.
    #[inline]
    pub fn read_u8(&self, offset: usize) -> Result<u8, TcmuError> {
        self.read_scalar(offset)
    }

    /// Reads a native-endian u16 at a 2-aligned offset.
    #[inline]
    pub fn read_u16(&self, offset: usize) -> Result<u16, TcmuError> {
        self.read_scalar(offset)
    }

    /// Reads a native-endian u32 at a 4-aligned offset.
    #[inline]
    pub fn read_u32(&self, offset: usize) -> Result<u32, TcmuError> {
        self.read_scalar(offset)
    }

    /// Reads a native-endian u64 at an 8-aligned offset.
    #[inline]
    pub fn read_u64(&self, offset: usize) -> Result<u64, TcmuError> {
        self.read_scalar(offset)
    }

    /// Writes a byte.
    #[inline]
    pub fn write_u8(&self, offset: usize, value: u8) -> Result<(), TcmuError> {
        self.write_scalar(offset, value)
    }

    /// Writes a native-endian u16 at a 2-aligned offset.
    #[inline]
    pub fn write_u16(&self, offset: usize, value: u16) -> Result<(), TcmuError> {
        self.write_scalar(offset, value)
    }

    /// Writes a native-endian u32 at a 4-aligned offset.
    #[inline]
    pub fn write_u32(&self, offset: usize, value: u32) -> Result<(), TcmuError> {
        self.write_scalar(offset, value)
    }

    /// Writes a native-endian u64 at an 8-aligned offset.
    #[inline]
    pub fn write_u64(&self, offset: usize, value: u64) -> Result<(), TcmuError> {
        self.write_scalar(offset, value)
    }

    /// Copies `dst.len()` bytes at `offset` out of the mapping.
    #[inline]
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), TcmuError> {
        let src = self.ptr_at(offset, dst.len())?;
        // SAFETY: `src..src+len` is inside the live mapping (checked); `dst`
        // is a distinct Rust buffer, so the ranges do not overlap. Plain bytes
        // have no invalid values.
        unsafe { ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Reads `N` bytes at `offset` (a fixed-size copy the compiler inlines,
    /// unlike [`read_bytes`](Self::read_bytes) of a runtime length).
    #[inline]
    pub fn read_array<const N: usize>(&self, offset: usize) -> Result<[u8; N], TcmuError> {
        let src = self.ptr_at(offset, N)?;
        let mut out = [0u8; N];
        // SAFETY: as in `read_bytes`: `src..src+N` is inside the live mapping
        // (checked) and `out` is a distinct local buffer.
        unsafe { ptr::copy_nonoverlapping(src, out.as_mut_ptr(), N) };
        Ok(out)
    }

    /// Copies `src` into the mapping at `offset`.
    #[inline]
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), TcmuError> {
        let dst = self.ptr_at(offset, src.len())?;
        // SAFETY: `dst..dst+len` is inside the live, writable mapping
        // (checked); `src` is a Rust buffer outside it, so no overlap.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    #[inline]
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), TcmuError> {
        let dst = self.ptr_at(offset, len)?;
        // SAFETY: in bounds of the live, writable mapping (checked).
        unsafe { ptr::write_bytes(dst, byte, len) };
        Ok(())
    }

    #[inline]
    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= 128 && offset.is_multiple_of(4));
        // SAFETY: `offset` is a mailbox field offset (12 or 64), inside every
        // region (len >= 128 is checked at construction) and 4-aligned on a
        // page-aligned base. `AtomicU32` has the layout of `u32` and permits
        // concurrent mutation through `&`, so a shared reference to it is
        // sound even though the peer writes it; it lives as long as `self`
        // keeps the mapping alive.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// `cmd_head`, acquire load (pairs with the kernel's
    /// `smp_store_release`): entries before it are visible.
    #[inline]
    pub fn load_cmd_head(&self) -> u32 {
        self.atomic_u32(MB_CMD_HEAD).load(Ordering::Acquire)
    }

    /// Publishes `cmd_head` with a release store (the kernel side's
    /// store; the device never writes it).
    #[inline]
    pub fn store_cmd_head(&self, head: u32) {
        self.atomic_u32(MB_CMD_HEAD).store(head, Ordering::Release)
    }

    /// `cmd_tail`, acquire load (the kernel side reads completions after
    /// it).
    #[inline]
    pub fn load_cmd_tail(&self) -> u32 {
        self.atomic_u32(MB_CMD_TAIL).load(Ordering::Acquire)
    }

    /// Publishes `cmd_tail` with a release store: every response written
    /// before it is visible to whoever acquires the new tail.
    #[inline]
    pub fn store_cmd_tail(&self, tail: u32) {
        self.atomic_u32(MB_CMD_TAIL).store(tail, Ordering::Release)
    }

    /// Mailbox `version`.
    pub fn mailbox_version(&self) -> u16 {
        self.read_u16(MB_VERSION).unwrap_or(0)
    }

    /// Mailbox `flags`.
    pub fn mailbox_flags(&self) -> u16 {
        self.read_u16(MB_FLAGS).unwrap_or(0)
    }

    /// Mailbox `cmdr_off`.
    pub fn mailbox_cmdr_off(&self) -> u32 {
        self.read_u32(MB_CMDR_OFF).unwrap_or(0)
    }

    /// Mailbox `cmdr_size`.
    pub fn mailbox_cmdr_size(&self) -> u32 {
        self.read_u32(MB_CMDR_SIZE).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_refuse_out_of_bounds_and_misaligned() {
        let r = SharedRegion::anonymous(4096).unwrap();
        assert_eq!(r.len(), 4096);
        r.write_u32(4092, 0xdead_beef).unwrap();
        assert_eq!(r.read_u32(4092).unwrap(), 0xdead_beef);
        assert!(matches!(
            r.read_u32(4093),
            Err(TcmuError::Misaligned {
                offset: 4093,
                align: 4
            })
        ));
        assert!(matches!(
            r.read_u64(4096),
            Err(TcmuError::OutOfBounds {
                offset: 4096,
                len: 8
            })
        ));
        let mut buf = [0u8; 8];
        assert!(r.read_bytes(4090, &mut buf).is_err());
        assert!(r.read_bytes(usize::MAX - 2, &mut buf).is_err());
        assert!(r.write_bytes(4088, &buf).is_ok());
        assert!(r.ptr_at(0, 4097).is_err());
        assert!(r.ptr_at(4096, 0).is_ok());
    }

    #[test]
    fn head_and_tail_live_at_their_abi_offsets() {
        let r = SharedRegion::anonymous(4096).unwrap();
        r.store_cmd_head(0x1234);
        r.store_cmd_tail(0x5678);
        assert_eq!(r.read_u32(12).unwrap(), 0x1234);
        assert_eq!(r.read_u32(64).unwrap(), 0x5678);
        assert_eq!(r.load_cmd_head(), 0x1234);
        assert_eq!(r.load_cmd_tail(), 0x5678);
    }

    #[test]
    fn clones_share_the_mapping() {
        let a = SharedRegion::anonymous(8192).unwrap();
        let b = a.clone();
        drop(a);
        b.write_bytes(5000, b"abc").unwrap();
        let mut out = [0u8; 3];
        b.read_bytes(5000, &mut out).unwrap();
        assert_eq!(&out, b"abc");
    }

    #[test]
    fn regions_smaller_than_the_mailbox_are_refused() {
        assert!(matches!(
            SharedRegion::anonymous(64),
            Err(TcmuError::RegionTooSmall { len: 64 })
        ));
    }

    #[test]
    fn uio_size_parses_sysfs_hex() {
        let dir = std::env::temp_dir().join(format!("tcmu-uio-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("maps/map0")).unwrap();
        std::fs::write(dir.join("maps/map0/size"), "0x0000000048000000\n").unwrap();
        assert_eq!(uio_map0_size(&dir).unwrap(), 0x4800_0000);
        std::fs::write(dir.join("maps/map0/size"), "1082130432\n").unwrap();
        assert_eq!(uio_map0_size(&dir).unwrap(), 1_082_130_432);
        std::fs::write(dir.join("maps/map0/size"), "0xzz\n").unwrap();
        assert!(matches!(
            uio_map0_size(&dir),
            Err(TcmuError::UioMapSize { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            uio_map0_size(&dir),
            Err(TcmuError::UioMapSize { .. })
        ));
    }
}
