//! `ScstDevice` against a scripted fake kernel (`FakeKernel`) and a manual
//! executor: the REPLY_AND_GET_MULTI protocol (batching, EAGAIN, refused
//! replies), the buffer flows, task management, PARSE, options and faults.
//!
//! The fake kernel, the manual executor and the shared fixtures are
//! modules of their own, and the tests are grouped by topic (`exchange`,
//! `buffers`, `task_mgmt`, `subcommands`).

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bdev::{Capabilities, Geometry, IoVec};
use dataplane::exec::{status, CommandExecutor, Response};
use dataplane::frontend::{CoalesceConfig, UNJOINED_TO_CLOSE};
use dataplane::lun::LunConfig;
use dataplane::scsi::{ScsiError, SenseFormat, UnitInfo};
use dataplane::scst::abi::*;
use dataplane::scst::device::{DeviceError, ScstDevice, ScstDeviceConfig};
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use dataplane::scst::pool::{BufferPool, PoolConfig};
use nix::errno::Errno;

mod fake_kernel;
mod fixtures;
mod manual;

mod buffers;
mod exchange;
mod subcommands;
mod task_mgmt;

use fake_kernel::*;
use fixtures::*;
use manual::*;
