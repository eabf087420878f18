//! Compile-time layout checks of the scst_user ABI structs: every size and
//! offset against the reference (gcc `sizeof`/`offsetof` on x86_64 for the
//! SCST 3.10/3.11 headers). A struct that drifts fails the build.

use std::mem::{offset_of, size_of};

use super::*;

const _: () = {
    assert!(size_of::<ScstUserOpt>() == 20);
    assert!(offset_of!(ScstUserOpt, partial_len) == 4);
    assert!(offset_of!(ScstUserOpt, tst) == 8);
    assert!(offset_of!(ScstUserOpt, d_sense) == 14);
    assert!(offset_of!(ScstUserOpt, has_own_order_mgmt) == 15);
    assert!(offset_of!(ScstUserOpt, ext_copy_remap_supported) == 16);

    assert!(size_of::<ScstUserDevDesc>() == 160);
    assert!(offset_of!(ScstUserDevDesc, license_str) == 8);
    assert!(offset_of!(ScstUserDevDesc, type_) == 16);
    assert!(offset_of!(ScstUserDevDesc, sgv_shared) == 17);
    assert!(offset_of!(ScstUserDevDesc, sgv_disable_clustered_pool) == 18);
    assert!(offset_of!(ScstUserDevDesc, sgv_single_alloc_pages) == 20);
    assert!(offset_of!(ScstUserDevDesc, sgv_purge_interval) == 24);
    assert!(offset_of!(ScstUserDevDesc, opt) == 28);
    assert!(offset_of!(ScstUserDevDesc, block_size) == 48);
    assert!(offset_of!(ScstUserDevDesc, enable_pr_cmds_notifications) == 52);
    assert!(offset_of!(ScstUserDevDesc, name) == 53);
    assert!(offset_of!(ScstUserDevDesc, sgv_name) == 103);

    assert!(size_of::<ScstUserSess>() == 536);
    assert!(offset_of!(ScstUserSess, lun) == 8);
    assert!(offset_of!(ScstUserSess, threads_num) == 16);
    assert!(offset_of!(ScstUserSess, rd_only) == 18);
    assert!(offset_of!(ScstUserSess, scsi_transport_version) == 20);
    assert!(offset_of!(ScstUserSess, phys_transport_version) == 22);
    assert!(offset_of!(ScstUserSess, initiator_name) == 24);
    assert!(offset_of!(ScstUserSess, target_name) == 280);

    assert!(size_of::<ScstUserScsiCmdParse>() == 80);
    assert!(offset_of!(ScstUserScsiCmdParse, cdb) == 8);
    assert!(offset_of!(ScstUserScsiCmdParse, cdb_len) == 24);
    assert!(offset_of!(ScstUserScsiCmdParse, lba) == 32);
    assert!(offset_of!(ScstUserScsiCmdParse, data_len) == 40);
    assert!(offset_of!(ScstUserScsiCmdParse, bufflen) == 48);
    assert!(offset_of!(ScstUserScsiCmdParse, out_bufflen) == 52);
    assert!(offset_of!(ScstUserScsiCmdParse, timeout) == 56);
    assert!(offset_of!(ScstUserScsiCmdParse, op_flags) == 60);
    assert!(offset_of!(ScstUserScsiCmdParse, queue_type) == 64);
    assert!(offset_of!(ScstUserScsiCmdParse, data_direction) == 65);
    assert!(offset_of!(ScstUserScsiCmdParse, expected_values_set) == 66);
    assert!(offset_of!(ScstUserScsiCmdParse, expected_data_direction) == 67);
    assert!(offset_of!(ScstUserScsiCmdParse, expected_transfer_len) == 68);
    assert!(offset_of!(ScstUserScsiCmdParse, expected_out_transfer_len) == 72);
    assert!(offset_of!(ScstUserScsiCmdParse, sn) == 76);

    assert!(size_of::<ScstUserScsiCmdAllocMem>() == 40);
    assert!(offset_of!(ScstUserScsiCmdAllocMem, cdb_len) == 24);
    assert!(offset_of!(ScstUserScsiCmdAllocMem, alloc_len) == 28);
    assert!(offset_of!(ScstUserScsiCmdAllocMem, queue_type) == 32);
    assert!(offset_of!(ScstUserScsiCmdAllocMem, data_direction) == 33);
    assert!(offset_of!(ScstUserScsiCmdAllocMem, sn) == 36);

    assert!(size_of::<ScstUserScsiCmdExec>() == 104);
    assert!(offset_of!(ScstUserScsiCmdExec, cdb_len) == 24);
    assert!(offset_of!(ScstUserScsiCmdExec, lba) == 32);
    assert!(offset_of!(ScstUserScsiCmdExec, data_len) == 40);
    assert!(offset_of!(ScstUserScsiCmdExec, bufflen) == 48);
    assert!(offset_of!(ScstUserScsiCmdExec, alloc_len) == 52);
    assert!(offset_of!(ScstUserScsiCmdExec, pbuf) == 56);
    assert!(offset_of!(ScstUserScsiCmdExec, queue_type) == 64);
    assert!(offset_of!(ScstUserScsiCmdExec, data_direction) == 65);
    assert!(offset_of!(ScstUserScsiCmdExec, partial) == 66);
    assert!(offset_of!(ScstUserScsiCmdExec, timeout) == 68);
    assert!(offset_of!(ScstUserScsiCmdExec, p_out_buf) == 72);
    assert!(offset_of!(ScstUserScsiCmdExec, out_bufflen) == 80);
    assert!(offset_of!(ScstUserScsiCmdExec, sn) == 84);
    assert!(offset_of!(ScstUserScsiCmdExec, parent_cmd_h) == 88);
    assert!(offset_of!(ScstUserScsiCmdExec, parent_cmd_data_len) == 92);
    assert!(offset_of!(ScstUserScsiCmdExec, partial_offset) == 96);

    assert!(size_of::<ScstUserScsiOnFreeCmd>() == 16);
    assert!(offset_of!(ScstUserScsiOnFreeCmd, resp_data_len) == 8);
    assert!(offset_of!(ScstUserScsiOnFreeCmd, buffer_cached) == 12);
    assert!(offset_of!(ScstUserScsiOnFreeCmd, aborted) == 13);
    assert!(offset_of!(ScstUserScsiOnFreeCmd, status) == 14);
    assert!(offset_of!(ScstUserScsiOnFreeCmd, delivery_status) == 15);

    assert!(size_of::<ScstUserOnCachedMemFree>() == 8);

    assert!(size_of::<ScstUserTm>() == 24);
    assert!(offset_of!(ScstUserTm, fn_) == 8);
    assert!(offset_of!(ScstUserTm, cmd_h_to_abort) == 12);
    assert!(offset_of!(ScstUserTm, cmd_sn) == 16);
    assert!(offset_of!(ScstUserTm, cmd_sn_set) == 20);

    assert!(size_of::<ScstUserExtCopyDataDescr>() == 24);
    assert!(offset_of!(ScstUserExtCopyDataDescr, data_len) == 16);
    assert!(size_of::<ScstUserExtCopyRemap>() == 48);
    assert!(offset_of!(ScstUserExtCopyRemap, data_descr) == 24);

    assert!(size_of::<ScstUserGetCmd>() == 544);
    assert!(offset_of!(ScstUserGetCmd, subcode) == 4);
    assert!(offset_of!(ScstUserGetCmd, payload) == 8);

    assert!(size_of::<ScstUserScsiCmdReplyParse>() == 48);
    assert!(offset_of!(ScstUserScsiCmdReplyParse, payload) == 8);
    // Members of the parse reply union, at their offsets inside the reply
    // (8 + offset in the member): queue_type 8, data_direction 9,
    // cdb_len 10, lba 16, data_len 24, bufflen 32, op_flags 36,
    // out_bufflen 40; sense_len 8, psense_buffer 16.
    assert!(offset_of!(ParseResult, data_direction) == 1);
    assert!(offset_of!(ParseResult, cdb_len) == 2);
    assert!(offset_of!(ParseResult, lba) == 8);
    assert!(offset_of!(ParseResult, data_len) == 16);
    assert!(offset_of!(ParseResult, bufflen) == 24);
    assert!(offset_of!(ParseResult, op_flags) == 28);
    assert!(offset_of!(ParseResult, out_bufflen) == 32);
    assert!(size_of::<ParseResult>() == 40);
    assert!(offset_of!(ReplySense, psense_buffer) == 8);
    assert!(size_of::<ReplySense>() == 16);

    assert!(size_of::<ScstUserScsiCmdReplyAllocMem>() == 8);
    assert!(size_of::<ScstUserDataDescriptor>() == 16);

    assert!(size_of::<ScstUserScsiCmdReplyExec>() == 40);
    assert!(offset_of!(ScstUserScsiCmdReplyExec, pbuf) == 8);
    assert!(offset_of!(ScstUserScsiCmdReplyExec, reply_type) == 16);
    assert!(offset_of!(ScstUserScsiCmdReplyExec, status) == 17);
    assert!(offset_of!(ScstUserScsiCmdReplyExec, payload) == 24);
    assert!(offset_of!(ReplyWriteSame, ws_descriptors) == 8);

    assert!(size_of::<ScstUserExtCopyReplyRemap>() == 24);
    assert!(offset_of!(ScstUserExtCopyReplyRemap, remap_descriptors_len) == 8);
    assert!(offset_of!(ScstUserExtCopyReplyRemap, status) == 10);
    assert!(offset_of!(ScstUserExtCopyReplyRemap, sense_len) == 11);
    assert!(offset_of!(ScstUserExtCopyReplyRemap, psense_buffer) == 16);

    assert!(size_of::<ScstUserReplyCmd>() == 56);
    assert!(offset_of!(ScstUserReplyCmd, payload) == 8);

    assert!(size_of::<ScstUserGetExtCdb>() == 16);
    assert!(offset_of!(ScstUserGetExtCdb, ext_cdb_buffer) == 8);
    assert!(size_of::<ScstUserPreallocBufferIn>() == 16);
    assert!(offset_of!(ScstUserPreallocBufferIn, bufflen) == 8);
    assert!(offset_of!(ScstUserPreallocBufferIn, for_clust_pool) == 12);
    assert!(size_of::<ScstUserPreallocBufferOut>() == 4);
    assert!(size_of::<ScstUserPreallocBuffer>() == 16);

    assert!(size_of::<ScstUserGetMulti>() == 16);
    assert!(offset_of!(ScstUserGetMulti, replies_cnt) == 8);
    assert!(offset_of!(ScstUserGetMulti, replies_done) == 10);
    assert!(offset_of!(ScstUserGetMulti, cmds_cnt) == 12);
};
