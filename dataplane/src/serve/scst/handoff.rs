//! Handing the registered `[[scst]]` devices to a successor or a service
//! manager's fd store (see `../handoff.rs` and `scst/device/handoff.rs`):
//! quiesce, flush the kernel's buffer cache, drain, send duplicates of the
//! fds.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use super::ScstDevices;
use crate::scst::device::HandOff;
use crate::serve::config::ServeConfig;
use crate::serve::handoff::{HandedDevice, HandoffError, HandoffSink, ReceivedDevice};
use crate::serve::host::Host;
use crate::serve::resources::Resources;

/// How long a hand-off waits for the devices to quiesce and come clean.
const HANDOFF_QUIESCE: Duration = Duration::from_secs(10);
/// How often a device that is not clean yet gets FLUSH_CACHE again.
const HANDOFF_REFLUSH: Duration = Duration::from_secs(2);

impl ScstDevices {
    /// Hands every registered device to `sink` (see
    /// `handoff.rs` and `scst/device/handoff.rs`): each is quiesced, its
    /// cached buffers flushed, and once none of its memory is with the
    /// kernel it leaves its reactor (drained) and a duplicate of its fd
    /// goes to the successor with its sessions. Returns the devices handed
    /// over, which this server no longer has.
    ///
    /// If a device does not come clean within [`HANDOFF_QUIESCE`] nothing
    /// is handed over: every device serves on and the successor is told
    /// why. If sending fails after the devices left their reactors, they
    /// are taken back on the kept fds (their LUNs never leave SCST).
    pub(in crate::serve) fn hand_off<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        serve_config: &ServeConfig,
        sink: &mut dyn HandoffSink,
        log: &mut dyn FnMut(&str),
    ) -> Result<Vec<String>, HandoffError> {
        let ready = match self.quiesce(host) {
            Ok(ready) => ready,
            Err(e) => {
                for d in &self.devices {
                    d.handoff.cancel();
                }
                self.wait_serving(log);
                if let Err(refused) = sink.refuse(&e.to_string()) {
                    log(&format!("telling the receiver why: {refused}"));
                }
                return Err(e);
            }
        };
        let mut going = Vec::with_capacity(ready.len());
        for (i, fd) in ready {
            let d = &mut self.devices[i];
            if let Some(poller) = d.poller.take() {
                match resources.remove_poller(d.reactor, poller) {
                    Ok(removed) => drop(removed),
                    Err(e) => log(&format!("removing SCST device {}: {e}", d.name)),
                }
            }
            let device = HandedDevice {
                name: d.name.clone(),
                sessions: d.handoff.sessions(),
            };
            going.push((device, fd));
        }
        let names: Vec<String> = going.iter().map(|(d, _)| d.name.clone()).collect();
        self.devices.retain(|d| !names.contains(&d.name));
        self.changes += 1;
        let borrowed: Vec<(HandedDevice, BorrowedFd<'_>)> = going
            .iter()
            .map(|(d, fd)| (d.clone(), std::os::fd::AsFd::as_fd(fd)))
            .collect();
        let sent = sink.send(&borrowed);
        drop(borrowed);
        if let Err(e) = sent {
            log(&format!(
                "handing the SCST devices over failed ({e}): taking them back"
            ));
            let received = going
                .into_iter()
                .map(|(device, fd)| ReceivedDevice { device, fd })
                .collect();
            let mut taken_back = serve_config.clone();
            taken_back.scst.retain(|c| names.contains(&c.name));
            if let Err(again) = self.start(host, resources, &taken_back, received, log) {
                log(&format!("taking the SCST devices back failed: {again}"));
            }
            return Err(e);
        }
        Ok(names)
    }

    /// After a hand-off was given up: waits (up to [`HANDOFF_QUIESCE`])
    /// until every device on a reactor has seen it, so that a command
    /// arriving once `hand_off` returned gets a buffer, not BUSY (a device
    /// quiescing answers ALLOC_MEM with BUSY until its next poll).
    fn wait_serving(&self, log: &mut dyn FnMut(&str)) {
        let deadline = Instant::now() + HANDOFF_QUIESCE;
        for d in &self.devices {
            if !d.is_polled() {
                continue; // not polled: it has nothing to see
            }
            if !wait_until(deadline, || d.handoff.serving()) {
                log(&format!(
                    "SCST device {}: still quiescing {HANDOFF_QUIESCE:?} after the hand-off was given up",
                    d.name
                ));
            }
        }
    }

    /// Steps 1-2 of a hand-off for every registered device: quiesced,
    /// flushed and clean; returns each one's index with a duplicate of its
    /// fd.
    fn quiesce<H: Host>(
        &mut self,
        host: &mut H,
    ) -> Result<Vec<(usize, std::os::fd::OwnedFd)>, HandoffError> {
        let mut ready = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !d.is_polled() {
                continue; // unregistered: the successor registers it itself
            }
            let Some(raw) = d.fd else {
                return Err(HandoffError::Device {
                    device: d.name.clone(),
                    why: "its kernel side is not a file that can be handed over".into(),
                });
            };
            // SAFETY: the device on the reactor owns this fd and keeps it
            // open until it is dropped, which happens only when this
            // thread removes its poller (after the duplicate is made).
            let fd = unsafe { BorrowedFd::borrow_raw(raw) }
                .try_clone_to_owned()
                .map_err(|e| HandoffError::Device {
                    device: d.name.clone(),
                    why: format!("duplicating its fd: {e}"),
                })?;
            d.handoff.request();
            ready.push((i, fd));
        }
        let deadline = Instant::now() + HANDOFF_QUIESCE;
        let wait = |what: &str, done: &dyn Fn(&HandOff) -> bool| {
            for &(i, _) in &ready {
                let d = &self.devices[i];
                if !wait_until(deadline, || done(&d.handoff)) {
                    return Err(HandoffError::Device {
                        device: d.name.clone(),
                        why: format!("it did not {what} within {HANDOFF_QUIESCE:?}"),
                    });
                }
            }
            Ok(())
        };
        wait("stop handing out buffers", &HandOff::quiescing)?;
        let mut flushed_at = Instant::now();
        for (i, fd) in &ready {
            flush(host, &self.devices[*i].name, fd)?;
        }
        // Every cached buffer comes back as an ON_CACHED_MEM_FREE, which
        // the devices answer; flush again now and then in case one was
        // cached after the flush began.
        for (i, fd) in &ready {
            let d = &self.devices[*i];
            while !d.handoff.is_clean() {
                if Instant::now() >= deadline {
                    return Err(HandoffError::Device {
                        device: d.name.clone(),
                        why: format!(
                            "the kernel still holds some of its buffers after {HANDOFF_QUIESCE:?}"
                        ),
                    });
                }
                if flushed_at.elapsed() >= HANDOFF_REFLUSH {
                    flush(host, &d.name, fd)?;
                    flushed_at = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(ready)
    }
}

/// Waits until `done` holds, looking every millisecond (the devices'
/// reactors publish what they saw at their next poll); false if
/// `deadline` passed first.
fn wait_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// FLUSH_CACHE on a device being handed over ([`Host::flush_scst`]).
fn flush<H: Host>(
    host: &mut H,
    device: &str,
    fd: &std::os::fd::OwnedFd,
) -> Result<(), HandoffError> {
    host.flush_scst(std::os::fd::AsFd::as_fd(fd))
        .map_err(|e| HandoffError::Device {
            device: device.to_owned(),
            why: format!("SCST_USER_FLUSH_CACHE failed: {e}"),
        })
}
