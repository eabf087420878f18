//! The simulated kernels of the bench, as [`Initiator`]s, and the devices
//! that serve them: a TCMU ring and an scst_user device.

use crate::initiator::{Completion, Initiator, IoData, SubmitError};
use sim::scst::{
    ScstSimInitiator, SimCompletion as ScstCompletion, SimData as ScstData, SimError,
    SimSubmitError as ScstSubmitError,
};
use sim::tcmu::{SimCompletion as TcmuCompletion, SimData, SimSubmitError, TcmuSim};

fn tcmu_data(data: IoData<'_>) -> SimData<'_> {
    match data {
        IoData::None => SimData::None,
        IoData::Out(bytes) => SimData::Out(bytes),
        IoData::In(len) => SimData::In(len),
    }
}

fn scst_data(data: IoData<'_>) -> ScstData<'_> {
    match data {
        IoData::None => ScstData::None,
        IoData::Out(bytes) => ScstData::Out(bytes),
        IoData::In(len) => ScstData::In(len),
    }
}

/// The TCMU simulator as an [`Initiator`].
#[derive(Debug)]
pub struct TcmuInitiator {
    sim: TcmuSim,
}

impl TcmuInitiator {
    /// Wraps a simulator.
    pub fn new(sim: TcmuSim) -> Self {
        Self { sim }
    }

    /// The simulator.
    pub fn sim(&self) -> &TcmuSim {
        &self.sim
    }
}

impl Completion for TcmuCompletion<'_> {
    fn tag(&self) -> u64 {
        self.tag
    }
    fn status(&self) -> u8 {
        self.status
    }
    fn sense(&self) -> &[u8] {
        self.sense
    }
    fn copy_data_in(&self, dst: &mut [u8]) -> usize {
        TcmuCompletion::copy_data_in(self, dst)
    }
}

impl Initiator for TcmuInitiator {
    fn submit(&mut self, cdb: &[u8], data: IoData<'_>, tag: u64) -> Result<(), SubmitError> {
        match self.sim.submit(cdb, tcmu_data(data), tag) {
            Ok(_) => Ok(()),
            Err(
                SimSubmitError::RingFull | SimSubmitError::DataAreaFull | SimSubmitError::NoCmdId,
            ) => Err(SubmitError::Full),
            Err(e) => Err(SubmitError::Failed(e.to_string())),
        }
    }

    fn notify(&mut self) {
        self.sim.notify();
    }

    fn reap(&mut self, done: &mut dyn FnMut(&dyn Completion)) -> Result<usize, SubmitError> {
        self.sim
            .reap(|c| done(c))
            .map_err(|e| SubmitError::Failed(e.to_string()))
    }

    fn doorbells(&self) -> u64 {
        self.sim.doorbells()
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.sim.doorbell_fd()))
    }
}

/// The scst_user simulator (SCST core, target driver and initiator) as an
/// [`Initiator`], submitting on one session.
#[derive(Debug)]
pub struct ScstInitiator {
    sim: ScstSimInitiator,
    /// The session commands go to; 0 until [`attach`](Self::attach).
    sess_h: u64,
}

impl ScstInitiator {
    /// Wraps a simulator; attach a session before submitting.
    pub fn new(sim: ScstSimInitiator) -> Self {
        Self { sim, sess_h: 0 }
    }

    /// Attaches the session (LUN 0) the commands go to. The device must be
    /// polled meanwhile (its reactor runs): the handler answers ATTACH_SESS.
    pub fn attach(&mut self, initiator_name: &str) -> Result<(), SimError> {
        self.sess_h = self.sim.attach_session(0, initiator_name)?;
        Ok(())
    }

    /// The simulator.
    pub fn sim(&self) -> &ScstSimInitiator {
        &self.sim
    }
}

impl Completion for ScstCompletion<'_> {
    fn tag(&self) -> u64 {
        self.tag
    }
    fn status(&self) -> u8 {
        self.status
    }
    fn sense(&self) -> &[u8] {
        self.sense
    }
    fn copy_data_in(&self, dst: &mut [u8]) -> usize {
        ScstCompletion::copy_data_in(self, dst)
    }
}

impl Initiator for ScstInitiator {
    fn submit(&mut self, cdb: &[u8], data: IoData<'_>, tag: u64) -> Result<(), SubmitError> {
        match self.sim.submit(self.sess_h, cdb, scst_data(data), tag) {
            Ok(()) => Ok(()),
            Err(ScstSubmitError::Full) => Err(SubmitError::Full),
            Err(e) => Err(SubmitError::Failed(e.to_string())),
        }
    }

    fn notify(&mut self) {
        self.sim.notify();
    }

    fn reap(&mut self, done: &mut dyn FnMut(&dyn Completion)) -> Result<usize, SubmitError> {
        self.sim
            .reap(|c| done(c))
            .map_err(|e| SubmitError::Failed(e.to_string()))
    }

    fn doorbells(&self) -> u64 {
        self.sim.ioctls()
    }
}

/// Either simulated kernel.
#[derive(Debug)]
pub enum BenchInitiator {
    /// LIO's TCMU.
    Tcmu(Box<TcmuInitiator>),
    /// SCST's scst_user.
    Scst(ScstInitiator),
}

impl BenchInitiator {
    /// Notifications the simulated kernel sent to the dataplane.
    pub fn notifications(&self) -> u64 {
        match self {
            BenchInitiator::Tcmu(t) => t.sim().notifications(),
            BenchInitiator::Scst(s) => s.sim().notifications(),
        }
    }

    /// Why the simulated kernel stopped, if it did.
    pub fn fault(&self) -> Option<String> {
        match self {
            BenchInitiator::Tcmu(t) => t.sim().fault().map(|f| format!("ring fault: {f}")),
            BenchInitiator::Scst(s) => s
                .sim()
                .is_gone()
                .then(|| "the SCST device went away".to_string()),
        }
    }
}

impl Initiator for BenchInitiator {
    fn submit(&mut self, cdb: &[u8], data: IoData<'_>, tag: u64) -> Result<(), SubmitError> {
        match self {
            BenchInitiator::Tcmu(t) => t.submit(cdb, data, tag),
            BenchInitiator::Scst(s) => s.submit(cdb, data, tag),
        }
    }

    fn notify(&mut self) {
        match self {
            BenchInitiator::Tcmu(t) => t.notify(),
            BenchInitiator::Scst(s) => s.notify(),
        }
    }

    fn reap(&mut self, done: &mut dyn FnMut(&dyn Completion)) -> Result<usize, SubmitError> {
        match self {
            BenchInitiator::Tcmu(t) => t.reap(done),
            BenchInitiator::Scst(s) => s.reap(done),
        }
    }

    fn doorbells(&self) -> u64 {
        match self {
            BenchInitiator::Tcmu(t) => t.doorbells(),
            BenchInitiator::Scst(s) => s.doorbells(),
        }
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            BenchInitiator::Tcmu(t) => t.completion_fd(),
            BenchInitiator::Scst(s) => s.completion_fd(),
        }
    }
}
