//! The edge's request-head reader (`gateway_proxy::framing`): finding the end of a head fed
//! in pieces, the framing checks, and the absolute-form rewrite. No input may panic; a head
//! rewritten for its authority must pass the checks again; the end found byte by byte must
//! be the end found at once.
#![no_main]

use gateway_proxy::framing::{absolute_form_host, check_head, head_end};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into two reads, like a head arriving in two packets.
    let Some((&split, data)) = data.split_first() else { return };
    let cut = (split as usize).min(data.len());
    let mut lines = 0;
    let at_once = head_end(data, 0, &mut 0);
    let in_pieces = head_end(&data[..cut], 0, &mut lines).or_else(|| head_end(data, cut, &mut lines));
    assert_eq!(at_once, in_pieces, "the same head end, read at once or in two pieces");
    let Some(end) = at_once else { return };
    let head = &data[..end];
    if check_head(head, 8192).is_ok() {
        if let Some(fixed) = absolute_form_host(head) {
            assert!(check_head(&fixed, 8192 + 16).is_ok(), "a rewritten head stays valid");
            assert!(absolute_form_host(&fixed).is_none(), "the rewrite is stable");
        }
    }
});
