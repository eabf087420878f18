//! The socket file: refused if a live server answers on it, replaced if it
//! is stale, created with mode 0600 and removed at stop if it is still
//! ours.
//!
//! The listener is bound under a temporary name in the same directory,
//! made 0600 and then renamed over the path, so that nobody can connect
//! before the mode is set and a stale socket file is replaced in one step.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::error::SocketError;

/// Mode of the socket file: the server's user only.
pub const SOCKET_MODE: u32 = 0o600;

/// A bound socket and the identity of its file.
#[derive(Debug)]
pub(super) struct BoundSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// (device, inode) of the socket file, to remove it at stop only if it
    /// is still this one.
    id: (u64, u64),
}

fn io_error<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> SocketError + 'a {
    move |error| SocketError::Io {
        path: path.to_path_buf(),
        what,
        error,
    }
}

/// Binds the control socket at `path` (creating its directory): refused if
/// a server answers there or if something other than a socket is there; a
/// stale socket (nobody listening) is replaced.
pub(super) fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_error(dir, "creating the directory"))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(SocketError::InUse {
                    path: path.to_path_buf(),
                })
            }
            // Nobody listens: a server that died left it; replaced below.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(io_error(path, "checking for a live server")(e)),
        },
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path, "looking at the path")(e)),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_error(&tmp, "binding"))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error(&tmp, "setting its mode"))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_error(path, "renaming it into place")));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let meta = fs::symlink_metadata(path).map_err(io_error(path, "looking at the socket"))?;
    Ok(BoundSocket {
        listener,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

impl BoundSocket {
    /// Removes the socket file if it is still the one bound here (another
    /// server may have replaced it).
    pub(super) fn remove_file(&self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}
