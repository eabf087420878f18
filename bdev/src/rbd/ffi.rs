//! librados and librbd, loaded at run time: the C declarations of exactly
//! the calls the `rbd` bdev makes (from `rados/librados.h` and
//! `rbd/librbd.h` of Ceph 16), resolved once per process with `dlopen`.
//!
//! Loading at run time rather than linking keeps the dataplane buildable
//! and runnable on hosts without Ceph: only opening an `rbd` bdev needs
//! `librbd.so.1` and `librados.so.2` (Debian's `librbd1`, which pulls in
//! `librados2`), and without them it fails with a message naming the
//! package. The libraries are never unloaded (the loaded table lives in a
//! process-wide static), so the function pointers stay valid for the life
//! of the process.
//!
//! Why declarations of our own rather than a binding crate: `ceph` (3.2,
//! last released 2021) covers librados only, and `librbd-sys` (0.1, 2016)
//! lacks the calls a polled caller needs (`rbd_aio_readv`/`writev`,
//! `rbd_poll_io_events`, `rbd_set_image_notification`,
//! `rbd_aio_write_zeroes`); both link at build time, which would put Ceph
//! on every build host.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use libloading::Library;

/// `rados_t`: a cluster handle.
pub(super) type Rados = *mut c_void;
/// `rados_ioctx_t`: an I/O context (pool and namespace).
pub(super) type Ioctx = *mut c_void;
/// `rbd_image_t`: an open image.
pub(super) type Image = *mut c_void;
/// `rbd_completion_t`: an AIO completion (librbd's allocation).
pub(super) type Completion = *mut c_void;
/// `rbd_callback_t`.
pub(super) type Callback = Option<unsafe extern "C" fn(Completion, *mut c_void)>;

/// `EVENT_TYPE_EVENTFD` of `rbd_set_image_notification`.
pub(super) const EVENT_TYPE_EVENTFD: c_int = 2;
/// `LIBRADOS_OP_FLAG_FADVISE_FUA`: a write that bypasses librbd's cache.
pub(super) const OP_FLAG_FADVISE_FUA: c_int = 0x80;

/// `rbd_image_info_t` (160 bytes on 64-bit Linux).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct ImageInfo {
    pub size: u64,
    pub obj_size: u64,
    pub num_objs: u64,
    pub order: c_int,
    block_name_prefix: [c_char; 24],
    parent_pool: i64,
    parent_name: [c_char; 96],
}

impl Default for ImageInfo {
    fn default() -> Self {
        Self {
            size: 0,
            obj_size: 0,
            num_objs: 0,
            order: 0,
            block_name_prefix: [0; 24],
            parent_pool: 0,
            parent_name: [0; 96],
        }
    }
}

/// The libraries' file names (their sonames).
pub(super) const LIBRADOS: &str = "librados.so.2";
pub(super) const LIBRBD: &str = "librbd.so.1";

/// Declares [`Api`]: one function pointer per C function, and its loader.
macro_rules! api {
    ($(
        $lib:ident [$index:literal] {
            $( fn $name:ident($($arg:ty),* $(,)?) $(-> $ret:ty)?; )*
        }
    )*) => {
        /// The C functions the `rbd` bdev calls, resolved from the loaded
        /// libraries. Each is called under the C API's own contract, which
        /// the caller's `SAFETY` comment states.
        pub(super) struct Api {
            $($( pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*)*
            /// librados and librbd, kept loaded.
            _libraries: [Library; 2],
        }

        impl Api {
            /// Loads `rados` and then `rbd` (file names or paths) and
            /// resolves every function.
            fn load_from(rados: &str, rbd: &str) -> Result<Self, String> {
                let open = |file: &str| {
                    // SAFETY: loading runs the library's initialisers; librados
                    // and librbd are ordinary shared libraries whose
                    // initialisers only set up their own static state.
                    unsafe { Library::new(file) }.map_err(|e| {
                        format!(
                            "cannot load {file} ({e}): the rbd bdev needs librbd and librados \
                             (Debian: apt-get install librbd1)"
                        )
                    })
                };
                let libraries = [open(rados)?, open(rbd)?];
                $(
                    let $lib = &libraries[$index];
                    $(
                        // SAFETY: the symbol is the C function of that name,
                        // whose signature (from the installed headers) is the
                        // field's type.
                        let $name = unsafe {
                            $lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                                concat!(stringify!($name), "\0").as_bytes(),
                            )
                        }
                        .map(|symbol| *symbol)
                        .map_err(|e| {
                            format!(
                                "{} has no {} ({e}): the rbd bdev needs librbd of Ceph 15 \
                                 (Octopus) or later",
                                stringify!($lib),
                                stringify!($name),
                            )
                        })?;
                    )*
                )*
                Ok(Self {
                    $($( $name, )*)*
                    _libraries: libraries,
                })
            }
        }
    };
}

api! {
    librados [0] {
        fn rados_create2(*mut Rados, *const c_char, *const c_char, u64) -> c_int;
        fn rados_conf_read_file(Rados, *const c_char) -> c_int;
        fn rados_conf_set(Rados, *const c_char, *const c_char) -> c_int;
        fn rados_conf_get(Rados, *const c_char, *mut c_char, usize) -> c_int;
        fn rados_connect(Rados) -> c_int;
        fn rados_shutdown(Rados);
        fn rados_ioctx_create(Rados, *const c_char, *mut Ioctx) -> c_int;
        fn rados_ioctx_destroy(Ioctx);
        fn rados_ioctx_set_namespace(Ioctx, *const c_char);
    }
    librbd [1] {
        fn rbd_version(*mut c_int, *mut c_int, *mut c_int);
        fn rbd_open(Ioctx, *const c_char, *mut Image, *const c_char) -> c_int;
        fn rbd_close(Image) -> c_int;
        fn rbd_stat(Image, *mut ImageInfo, usize) -> c_int;
        fn rbd_set_image_notification(Image, c_int, c_int) -> c_int;
        fn rbd_poll_io_events(Image, *mut Completion, c_int) -> c_int;
        fn rbd_aio_create_completion(*mut c_void, Callback, *mut Completion) -> c_int;
        fn rbd_aio_get_arg(Completion) -> *mut c_void;
        fn rbd_aio_get_return_value(Completion) -> isize;
        fn rbd_aio_release(Completion);
        fn rbd_aio_readv(Image, *const libc::iovec, c_int, u64, Completion) -> c_int;
        fn rbd_aio_writev(Image, *const libc::iovec, c_int, u64, Completion) -> c_int;
        fn rbd_aio_write2(Image, u64, usize, *const c_char, Completion, c_int) -> c_int;
        fn rbd_aio_flush(Image, Completion) -> c_int;
        fn rbd_aio_discard(Image, u64, u64, Completion) -> c_int;
        fn rbd_aio_write_zeroes(Image, u64, usize, Completion, c_int, c_int) -> c_int;
    }
}

impl Api {
    /// librbd's version (major, minor, extra), e.g. 1.16.0 for Ceph 16.
    pub fn version(&self) -> (i32, i32, i32) {
        let (mut major, mut minor, mut extra) = (0, 0, 0);
        // SAFETY: rbd_version only writes the three ints it is given.
        unsafe { (self.rbd_version)(&mut major, &mut minor, &mut extra) };
        (major, minor, extra)
    }

    /// A configuration value of the cluster handle (`rados_conf_get`), or
    /// `None` when librados does not know the option.
    ///
    /// # Safety
    /// `cluster` is a live handle from `rados_create2`.
    pub unsafe fn conf_get(&self, cluster: Rados, option: &CStr) -> Option<String> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the caller's handle; `buf` is writable for its length and
        // librados NUL-terminates what it writes there.
        let rc = unsafe { (self.rados_conf_get)(cluster, option.as_ptr(), buf.as_mut_ptr(), 256) };
        if rc < 0 {
            return None;
        }
        // SAFETY: on success librados wrote a NUL-terminated string into
        // `buf` (it fails with ENAMETOOLONG when the value does not fit).
        let value = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Some(value.to_string_lossy().into_owned())
    }
}

// SAFETY: the table holds function pointers and library handles; librados
// and librbd are thread-safe C libraries, callable from any thread.
unsafe impl Send for Api {}
// SAFETY: as above; the table is never changed after loading.
unsafe impl Sync for Api {}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor, extra) = self.version();
        write!(f, "librbd {major}.{minor}.{extra}")
    }
}

/// The process's librados and librbd, loaded on first use; the error (the
/// same for every later call) names the missing library and the package.
pub(super) fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| Api::load_from(LIBRADOS, LIBRBD))
        .as_ref()
        .map_err(Clone::clone)
}

/// `strerror` of a positive errno, e.g. "No such file or directory".
pub(super) fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_info_has_the_c_layout() {
        assert_eq!(std::mem::size_of::<ImageInfo>(), 160);
        assert_eq!(std::mem::offset_of!(ImageInfo, order), 24);
        assert_eq!(std::mem::offset_of!(ImageInfo, parent_pool), 56);
    }

    #[test]
    fn strerror_is_the_text_alone() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
    }

    #[test]
    fn a_missing_library_names_the_package() {
        let Err(message) = Api::load_from("librados-absent.so.2", LIBRBD) else {
            panic!("a library that does not exist loaded");
        };
        assert!(message.contains("librados-absent.so.2"), "{message}");
        assert!(message.contains("apt-get install librbd1"), "{message}");
        // Present libraries but a missing symbol: libc has no rbd_open.
        if let Err(message) = Api::load_from("libc.so.6", "libc.so.6") {
            assert!(message.contains("has no rados_create2"), "{message}");
        }
    }
}
