//! Connecting to the cluster and opening the image behind an `rbd` bdev,
//! once per bdev: `rados_create2`, the configuration (`ceph.conf`, the
//! keyring, the timeouts), `rados_connect`, the pool's I/O context (and
//! namespace), `rbd_open`, `rbd_stat`, and the image's completion
//! notification on an eventfd. Control path only.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr;

use super::ffi::{self, Api};
use super::RbdOptions;
use crate::{Error, OpenProblem};

/// The open cluster handle, I/O context and image, and the eventfd librbd
/// writes once per completion. Dropping it closes the image (which flushes
/// librbd's cache), then the I/O context and the cluster handle.
///
/// Invariant: `image` is open until drop; no channel outlives the
/// connection (channels hold the bdev's shared state, which owns it).
pub(super) struct Connection {
    pub api: &'static Api,
    cluster: ffi::Rados,
    ioctx: ffi::Ioctx,
    image: ffi::Image,
    /// Written by librbd at every completion (`rbd_set_image_notification`);
    /// declared last so that it closes after the image.
    events: Option<OwnedFd>,
}

// SAFETY: the handles are librados/librbd objects whose C API may be called
// from any thread (librbd serialises inside an image with its own locks);
// the connection only closes them in `drop`, when nothing else uses them.
unsafe impl Send for Connection {}
// SAFETY: as above: the AIO calls, `rbd_poll_io_events` (a lock-free
// queue) and `rbd_stat` are safe to make concurrently on one image.
unsafe impl Sync for Connection {}

/// What the image and the client configuration turned out to be.
#[derive(Debug, Clone)]
pub(super) struct Facts {
    /// Image size in bytes.
    pub size: u64,
    /// Object size in bytes (a power of two, 4 MiB by default).
    pub object_size: u64,
    /// librbd's cache is on (`rbd_cache`): writes may complete before
    /// the OSDs have them, and a flush does real work.
    pub cache: bool,
    /// The cache honours `LIBRADOS_OP_FLAG_FADVISE_FUA` (off, or the
    /// `writearound` policy, Ceph 15's default), so a FUA write is one
    /// `rbd_aio_write2`; with `writeback` (the ObjectCacher, which ignores
    /// the flag) a FUA write is a write and then a flush.
    pub fua_native: bool,
    /// `rbd_cache_policy` as configured.
    pub cache_policy: String,
    /// Discards zero unaligned extents instead of skipping them
    /// (`rbd_skip_partial_discard` off, as the bdev sets it unless the
    /// options turn it back on): unmapped blocks read back zeroes.
    pub discard_zeroes: bool,
}

impl Connection {
    /// The open image, for the AIO calls.
    pub fn image(&self) -> ffi::Image {
        self.image
    }

    /// The eventfd librbd signals completions on.
    pub fn event_fd(&self) -> RawFd {
        self.events.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Connects and opens `options.image` (see the module docs).
    pub fn open(options: &RbdOptions) -> Result<(Self, Facts), Error> {
        let fail = Failure { options };
        let api = ffi::api().map_err(|message| {
            fail.error(
                "loading librbd",
                io::Error::new(io::ErrorKind::NotFound, message),
            )
        })?;
        let mut connection = Connection {
            api,
            cluster: ptr::null_mut(),
            ioctx: ptr::null_mut(),
            image: ptr::null_mut(),
            events: None,
        };
        let user = options.user.as_deref().unwrap_or("admin");
        let client = cstring(&fail, "the user", &format!("client.{user}"))?;
        // SAFETY: `cluster` receives a new handle; the strings are
        // NUL-terminated and live across the call.
        let rc = unsafe {
            (api.rados_create2)(
                &mut connection.cluster,
                c"ceph".as_ptr(),
                client.as_ptr(),
                0,
            )
        };
        fail.check("creating the cluster handle (rados_create2)", rc, |_| {
            String::new()
        })?;
        connection.configure(&fail)?;
        let timeout = options.op_timeout.as_secs();
        // SAFETY: a handle from rados_create2, not yet connected.
        let rc = unsafe { (api.rados_connect)(connection.cluster) };
        fail.check(
            "connecting to the cluster (rados_connect)",
            rc,
            |errno| match errno {
                libc::ETIMEDOUT => format!(
                    "no monitor answered within the {timeout} s timeout (check `mon host` \
                     in the configuration and that the monitors run)"
                ),
                libc::EACCES | libc::EPERM | libc::ENOENT => format!(
                    "the monitors refused client.{user} (check the keyring and the user's \
                     capabilities)"
                ),
                _ => String::new(),
            },
        )?;

        let pool = cstring(&fail, "the pool name", &options.pool)?;
        // SAFETY: a connected handle; `ioctx` receives a new context.
        let rc = unsafe {
            (api.rados_ioctx_create)(connection.cluster, pool.as_ptr(), &mut connection.ioctx)
        };
        fail.check("opening the pool (rados_ioctx_create)", rc, |errno| {
            if errno == libc::ENOENT {
                format!("pool `{}` does not exist", options.pool)
            } else {
                String::new()
            }
        })?;
        if let Some(namespace) = &options.namespace {
            let namespace = cstring(&fail, "the namespace", namespace)?;
            // SAFETY: a live I/O context; librados copies the name.
            unsafe { (api.rados_ioctx_set_namespace)(connection.ioctx, namespace.as_ptr()) };
        }

        let image = cstring(&fail, "the image name", &options.image)?;
        // SAFETY: a live I/O context; `image` receives the open image; no
        // snapshot (NULL).
        let rc = unsafe {
            (api.rbd_open)(
                connection.ioctx,
                image.as_ptr(),
                &mut connection.image,
                ptr::null(),
            )
        };
        if rc < 0 {
            connection.image = ptr::null_mut();
        }
        fail.check("opening the image (rbd_open)", rc, |errno| match errno {
            libc::ENOENT => format!(
                "image `{}` does not exist in pool `{}`",
                options.image,
                options.pool_and_namespace()
            ),
            libc::EPERM | libc::EACCES => format!(
                "client.{user} may not open images in pool `{}`",
                options.pool_and_namespace()
            ),
            _ => String::new(),
        })?;

        let mut info = ffi::ImageInfo::default();
        // SAFETY: an open image; `info` is a writable rbd_image_info_t of
        // the size passed.
        let rc = unsafe {
            (api.rbd_stat)(
                connection.image,
                &mut info,
                std::mem::size_of::<ffi::ImageInfo>(),
            )
        };
        fail.check("reading the image's size (rbd_stat)", rc, |_| String::new())?;

        // SAFETY: plain eventfd creation; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(fail.error("creating an eventfd", io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let events = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an open image; the eventfd stays open until after the
        // image is closed (`events` is dropped after `rbd_close`).
        let rc = unsafe {
            (api.rbd_set_image_notification)(connection.image, fd, ffi::EVENT_TYPE_EVENTFD)
        };
        connection.events = Some(events);
        fail.check(
            "asking for completion events (rbd_set_image_notification)",
            rc,
            |_| String::new(),
        )?;

        // SAFETY: the live cluster handle.
        let conf = |option: &CStr| unsafe { api.conf_get(connection.cluster, option) };
        let cache = conf(c"rbd_cache").is_none_or(|v| v == "true");
        let cache_policy = conf(c"rbd_cache_policy").unwrap_or_default();
        let facts = Facts {
            size: info.size,
            object_size: info.obj_size,
            cache,
            fua_native: !cache || cache_policy == "writearound" || cache_policy == "writethrough",
            cache_policy,
            discard_zeroes: conf(c"rbd_skip_partial_discard").is_some_and(|v| v == "false"),
        };
        Ok((connection, facts))
    }

    /// Reads the configuration and sets what the bdev needs before
    /// connecting.
    fn configure(&self, fail: &Failure<'_>) -> Result<(), Error> {
        let api = self.api;
        let options = fail.options;
        match &options.conf {
            Some(path) => {
                must_exist(fail, "reading the configuration", path)?;
                let path = cstring(fail, "the configuration path", &path.to_string_lossy())?;
                // SAFETY: a handle from rados_create2; a NUL-terminated path.
                let rc = unsafe { (api.rados_conf_read_file)(self.cluster, path.as_ptr()) };
                fail.check("reading the configuration", rc, |_| {
                    "not a valid ceph.conf".into()
                })?;
            }
            None => {
                // The default search ($CEPH_CONF, /etc/ceph/ceph.conf,
                // ~/.ceph/config, ./ceph.conf); none found is not an error
                // yet: `rados_connect` says what is missing.
                // SAFETY: a handle from rados_create2; NULL asks for the
                // default search.
                let _ = unsafe { (api.rados_conf_read_file)(self.cluster, ptr::null()) };
            }
        }
        if let Some(keyring) = &options.keyring {
            must_exist(fail, "reading the keyring", keyring)?;
            self.set(fail, c"keyring", &keyring.to_string_lossy())?;
        }
        // A dead OSD or monitor fails operations with ETIMEDOUT after this
        // long instead of leaving them queued forever.
        let seconds = options.op_timeout.as_secs().max(1).to_string();
        for option in [
            c"rados_osd_op_timeout",
            c"rados_mon_op_timeout",
            c"client_mount_timeout",
        ] {
            self.set(fail, option, &seconds)?;
        }
        // Discards of unaligned extents zero them instead of being skipped:
        // an unmapped block always reads back zeroes (LBPRZ).
        self.set(fail, c"rbd_skip_partial_discard", "false")?;
        for (option, value) in &options.config {
            let option = cstring(fail, "a configuration option", option)?;
            self.set(fail, &option, value)?;
        }
        // Not for the options to undo: an AIO call queues the request to
        // librbd's own threads and returns, so a reactor never waits in
        // librbd (for an exclusive lock, a throttle, a dead OSD).
        self.set(fail, c"rbd_non_blocking_aio", "true")?;
        Ok(())
    }

    /// `rados_conf_set(option, value)`.
    fn set(&self, fail: &Failure<'_>, option: &CStr, value: &str) -> Result<(), Error> {
        let value = cstring(fail, "a configuration value", value)?;
        // SAFETY: a handle from rados_create2, not yet connected; both
        // strings are NUL-terminated and librados copies them.
        let rc =
            unsafe { (self.api.rados_conf_set)(self.cluster, option.as_ptr(), value.as_ptr()) };
        fail.check("setting a configuration option", rc, |_| {
            format!(
                "{} = {} refused",
                option.to_string_lossy(),
                value.to_string_lossy()
            )
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.image.is_null() {
            // SAFETY: the open image; every channel (and so every AIO) is
            // gone: channels hold the shared state that owns this.
            unsafe { (self.api.rbd_close)(self.image) };
        }
        if !self.ioctx.is_null() {
            // SAFETY: a live I/O context with no open image left.
            unsafe { (self.api.rados_ioctx_destroy)(self.ioctx) };
        }
        if !self.cluster.is_null() {
            // SAFETY: a handle from rados_create2 with no I/O context left.
            unsafe { (self.api.rados_shutdown)(self.cluster) };
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("api", self.api)
            .field("image", &self.image)
            .field("events", &self.events)
            .finish()
    }
}

/// Builds the open errors of one bdev.
struct Failure<'a> {
    options: &'a RbdOptions,
}

impl Failure<'_> {
    /// [`Error::Open`] for this bdev: `what` failed with `source`.
    fn error(&self, what: &'static str, source: io::Error) -> Error {
        Error::Open {
            name: self.options.name.clone(),
            path: PathBuf::from(format!("rbd:{}", self.options.spec())),
            problem: OpenProblem::Os { what, source },
        }
    }

    /// Ok for `rc >= 0`; else the error of `what` with errno `-rc`,
    /// explained by `explain(errno)` (empty: the errno says it all).
    fn check(
        &self,
        what: &'static str,
        rc: libc::c_int,
        explain: impl FnOnce(i32) -> String,
    ) -> Result<(), Error> {
        if rc >= 0 {
            return Ok(());
        }
        let errno = -rc;
        let detail = explain(errno);
        let errno_text = format!("{} (errno {errno})", ffi::strerror(errno));
        let message = if detail.is_empty() {
            errno_text
        } else {
            format!("{detail}: {errno_text}")
        };
        let kind = io::Error::from_raw_os_error(errno).kind();
        Err(self.error(what, io::Error::new(kind, message)))
    }
}

/// A C string of `value`, or an error naming what it is when it holds a
/// NUL byte.
fn cstring(fail: &Failure<'_>, what: &str, value: &str) -> Result<CString, Error> {
    CString::new(value).map_err(|_| {
        Error::InvalidParameter(format!(
            "bdev {}: {what} `{}` holds a NUL byte",
            fail.options.name,
            value.escape_debug()
        ))
    })
}

/// An error unless `path` exists (librados says only EINVAL or ENOENT).
fn must_exist(fail: &Failure<'_>, what: &'static str, path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(fail.error(
            what,
            io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        )),
    }
}
