//! The `scsi_cdb` target: [`decode`] and [`emulate`] on an arbitrary CDB,
//! unit and parameter list.
//!
//! Checks: no panic; a decode or emulation error encodes to well-formed
//! sense (both formats) whose field pointer lies inside the CDB (decode)
//! or the parameter list (emulation); an emulated response is no longer
//! than the response buffer and than the command's allocation length.

use dataplane::scsi::{decode, emulate, Command, ScsiError, SenseFormat, RESPONSE_BUFFER_LEN};

use crate::input::Input;
use crate::lun::max_data_in;
use crate::sense_check::check_response;
use crate::unit::{mode, unit};

/// Checks that `error` reports well-formed sense in both formats.
pub fn check_error(error: &ScsiError, cdb_len: usize, param_len: usize) {
    for format in [SenseFormat::Fixed, SenseFormat::Descriptor] {
        check_response(&error.to_response(format), cdb_len, param_len);
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let unit = unit(&mut input);
    let mut mode = mode(&mut input);
    let len = input.below(33);
    let cdb = input.take(len).to_vec();
    let command = match decode(&cdb, &unit) {
        Ok(command) => command,
        Err(error) => {
            check_error(&error, cdb.len(), 0);
            return;
        }
    };
    if !command.is_emulated() {
        return;
    }
    let list: Vec<u8> = match command {
        Command::ModeSelect { param_len, .. } => {
            let mut list = input.rest().to_vec();
            list.resize(param_len as usize, 0);
            list
        }
        _ => Vec::new(),
    };
    let mut out = [0u8; RESPONSE_BUFFER_LEN];
    match emulate(&command, &unit, &mut mode, &list, &mut out) {
        Ok(n) => {
            assert!(n <= RESPONSE_BUFFER_LEN);
            let max = max_data_in(&cdb, &unit).expect("it decoded");
            assert!(
                n as u64 <= max,
                "{command:?} returned {n} bytes, over {max}"
            );
        }
        Err(error) => check_error(&error, cdb.len(), list.len()),
    }
}
