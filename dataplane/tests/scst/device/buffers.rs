//! The buffer flows: ALLOC_MEM, EXEC buffers, ON_FREE_CMD and
//! ON_CACHED_MEM_FREE, an exhausted pool, buffers the pool did not hand out.

use super::*;

#[test]
fn alloc_mem_exec_and_on_free_return_the_buffer() {
    let (k, mut dev) = device();
    let alloc = k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            sess_h: SESS_A,
            alloc_len: 8192,
            data_direction: SCST_DATA_WRITE,
            ..Default::default()
        })
    });
    dev.poll();
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(
        (r.reply.cmd_h, r.reply.subcode),
        (alloc, subcode::ALLOC_MEM)
    );
    let pbuf = r.reply.alloc_reply().pbuf;
    assert_ne!(pbuf, 0);
    assert_eq!(pbuf % 4096, 0);
    assert_eq!(dev.pool().get(pbuf).unwrap().len, 8192);

    // The EXEC of that write uses the buffer.
    let exec = k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 8192, pbuf);
    dev.poll();
    let sub = *dev.executor().submitted.last().unwrap();
    assert_eq!(sub.iov, Some((pbuf as usize, 8192)));
    dev.executor_mut().finish(sub.slot, Response::good(0));
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.reply.cmd_h, exec);
    let e = r.exec();
    assert_eq!((e.resp_data_len, e.pbuf, e.status), (0, 0, status::GOOD));
    assert_eq!(dev.pool().buffers_in_use(), 1, "the kernel still has it");

    // Not cached: ON_FREE_CMD returns it.
    k.queue(subcode::ON_FREE_CMD, |c| {
        c.set_on_free_cmd(&ScstUserScsiOnFreeCmd {
            pbuf,
            buffer_cached: 0,
            ..Default::default()
        })
    });
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 0);
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.reply.subcode, subcode::ON_FREE_CMD);
    assert_eq!(r.reply.result(), 0);
    assert_eq!(k.awaiting(), 0);
}

#[test]
fn cached_buffers_stay_until_on_cached_mem_free() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(4096));
    dev.poll();
    let pbuf = k.last_call().replies[0].exec().pbuf;
    assert_ne!(pbuf, 0);
    // Cached: ON_FREE_CMD leaves it with the kernel.
    k.queue(subcode::ON_FREE_CMD, |c| {
        c.set_on_free_cmd(&ScstUserScsiOnFreeCmd {
            pbuf,
            buffer_cached: 1,
            ..Default::default()
        })
    });
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 1);
    // The kernel reuses it for another READ.
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, pbuf);
    dev.poll();
    let sub = *dev.executor().submitted.last().unwrap();
    assert_eq!(sub.iov, Some((pbuf as usize, 4096)));
    dev.executor_mut().finish(sub.slot, Response::good(4096));
    dev.poll();
    let e = k.last_call().replies.last().unwrap().exec();
    assert_eq!(
        (e.resp_data_len, e.pbuf),
        (4096, 0),
        "no pbuf for a kernel buffer"
    );
    // Eviction.
    k.queue(subcode::ON_CACHED_MEM_FREE, |c| {
        c.set_on_cached_mem_free(&ScstUserOnCachedMemFree { pbuf })
    });
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 0);
    // A second eviction of the same address is refused by the pool and
    // counted, and still answered.
    k.queue(subcode::ON_CACHED_MEM_FREE, |c| {
        c.set_on_cached_mem_free(&ScstUserOnCachedMemFree { pbuf })
    });
    dev.poll();
    dev.poll();
    assert_eq!(dev.stats().snapshot().bad_frees, 1);
    assert_eq!(k.awaiting(), 0);
}

#[test]
fn a_read_that_returns_no_data_gives_its_buffer_back_at_once() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 1);
    let range = ScsiError::LbaOutOfRange.to_response(SenseFormat::Fixed);
    dev.executor_mut().finish_all(range);
    dev.poll();
    let r = k.last_call().replies[0].clone();
    let e = r.exec();
    assert_eq!((e.resp_data_len, e.pbuf), (0, 0));
    assert_eq!(e.status, status::CHECK_CONDITION);
    assert_eq!(r.sense, fixed_sense(0x05, 0x21, 0x00));
    assert_eq!(dev.pool().buffers_in_use(), 0);
}

#[test]
fn an_exhausted_pool_answers_busy() {
    let (k, mut dev) = device_with(
        default_options(),
        16,
        32,
        small_pool(1 << 20, 1 << 20),
        None,
    );
    k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 1 << 20,
            data_direction: SCST_DATA_WRITE,
            ..Default::default()
        })
    });
    k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 4096,
            data_direction: SCST_DATA_WRITE,
            ..Default::default()
        })
    });
    let read = k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    assert!(dev.executor().submitted.is_empty());
    dev.poll();
    let replies = k.last_call().replies;
    assert_ne!(replies[0].reply.alloc_reply().pbuf, 0);
    assert_eq!(
        replies[1].reply.alloc_reply().pbuf,
        0,
        "pbuf 0: the kernel says BUSY"
    );
    assert_eq!(replies[2].reply.cmd_h, read);
    let e = replies[2].exec();
    assert_eq!((e.status, e.resp_data_len, e.pbuf), (status::BUSY, 0, 0));
    assert!(replies[2].sense.is_empty());
    let st = dev.stats().snapshot();
    assert_eq!(st.busy, 2);
    assert_eq!(st.pool_failed_allocs, 2);
}

#[test]
fn an_exec_larger_than_the_largest_buffer_is_an_invalid_field() {
    let (k, mut dev) = device_with(
        default_options(),
        16,
        32,
        small_pool(1 << 20, 64 << 10),
        None,
    );
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 128 << 10, 0);
    dev.poll();
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.exec().status, status::CHECK_CONDITION);
    // INVALID FIELD IN CDB, field pointer at byte 7 (TRANSFER LENGTH).
    let mut expected = fixed_sense(0x05, 0x24, 0x00);
    expected[15] = 0xC0;
    expected[17] = 7;
    assert_eq!(r.sense, expected);
}

#[test]
fn an_unknown_pbuf_fails_with_hardware_error_without_touching_it() {
    let (k, mut dev) = device();
    let outside = 0x10_0000u64;
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 8192, outside);
    // Inside a live buffer, but not its start.
    k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 16384,
            ..Default::default()
        })
    });
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies[0].exec().status, status::CHECK_CONDITION);
    assert_eq!(replies[0].sense, fixed_sense(0x04, 0x44, 0x00));
    let pbuf = replies[1].reply.alloc_reply().pbuf;
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 8192, pbuf + 4096);
    // Larger than the buffer.
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 32768, pbuf);
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!(r.sense, fixed_sense(0x04, 0x44, 0x00));
    }
    assert!(dev.executor().submitted.is_empty());
    assert_eq!(dev.stats().snapshot().bad_pbufs, 3);
}

/// A write larger than the pool's largest buffer: ALLOC_MEM can only give a
/// buffer or BUSY (`pbuf` 0, which the initiator retries for ever), so it
/// gets a buffer of its own, the EXEC reaches the executor (the LUN fails
/// it with INVALID FIELD IN CDB on the transfer length, beyond its MAXIMUM
/// TRANSFER LENGTH), and the buffer goes when the kernel frees it.
#[test]
fn a_write_larger_than_the_largest_buffer_still_gets_a_buffer() {
    let (k, mut dev) = device_with(
        default_options(),
        16,
        32,
        small_pool(1 << 20, 64 << 10),
        None,
    );
    let len = 200 << 10;
    let alloc = k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            sess_h: SESS_A,
            alloc_len: len,
            data_direction: SCST_DATA_WRITE,
            ..Default::default()
        })
    });
    dev.poll();
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.reply.cmd_h, alloc);
    let pbuf = r.reply.alloc_reply().pbuf;
    assert_ne!(pbuf, 0, "not BUSY");
    assert_eq!(pbuf % 4096, 0);
    assert!(dev.pool().get(pbuf).is_none());
    // The memory is this process's and writable (the kernel pins it).
    // SAFETY: the device handed out `len` bytes at `pbuf` for the kernel to
    // fill; nothing else uses them in this test.
    unsafe { std::slice::from_raw_parts_mut(pbuf as *mut u8, len as usize) }.fill(0xA5);

    let exec = k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, len, pbuf);
    dev.poll();
    let sub = *dev.executor().submitted.last().unwrap();
    assert_eq!(sub.iov, Some((pbuf as usize, len as usize)));
    let mut sense = fixed_sense(0x05, 0x24, 0x00);
    sense[15] = 0xC0;
    sense[17] = 7;
    let invalid = ScsiError::cdb_byte(7).to_response(SenseFormat::Fixed);
    dev.executor_mut().finish(sub.slot, invalid);
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.reply.cmd_h, exec);
    assert_eq!(r.exec().status, status::CHECK_CONDITION);
    assert_eq!(r.sense, sense);
    assert_eq!(dev.stats().snapshot().oversize_buffers, 1);

    // Cached by the kernel, then evicted: the buffer goes.
    k.queue(subcode::ON_CACHED_MEM_FREE, |c| {
        c.set_on_cached_mem_free(&ScstUserOnCachedMemFree { pbuf })
    });
    dev.poll();
    dev.poll();
    assert_eq!(
        k.last_call().replies[0].reply.subcode,
        subcode::ON_CACHED_MEM_FREE
    );
    assert_eq!(dev.stats().snapshot().bad_frees, 0);
    assert_eq!(dev.oversize_buffers(), 0);
    assert_eq!(k.awaiting(), 0);
}
