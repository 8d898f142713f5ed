//! An access line in a text format costs no allocation per logged field: `access::log`
//! renders it into a buffer its thread keeps (before: the address, the time, the request
//! line, the status, the byte count and the duration were each a new `String`, then the line
//! another). Without a writer thread (`access::start_writer` not called) the line goes
//! straight to stdout, so the count below is the rendering's alone; with one, the queue's
//! copy of the line is its one allocation.
//!
//! One test in this file: the counting allocator's numbers are process-wide.

use gateway_config::{AccessFormat, AccessLog};
use gateway_proxy::access::{self, Entry};
use pingora_http::RequestHeader;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_combined_line_is_written_without_allocating() {
    let mut req = RequestHeader::build("GET", b"/json?x=1", None).unwrap();
    req.insert_header("user-agent", "wrk").unwrap();
    req.insert_header("referer", "https://example.com/").unwrap();
    let e = Entry {
        client: Some("192.0.2.7:5151".parse().unwrap()),
        req: &req,
        scheme: "https",
        status: 200,
        bytes: 12,
        duration: Duration::from_millis(3),
        route: "app",
        upstream: "backend",
        upstream_addr: None,
        remote_user: None,
        request_id: 0xfeed,
        tls: None,
    };
    let custom = AccessLog::Custom(
        AccessFormat::compile(
            "t",
            "$remote_addr $status $body_bytes_sent $request_time \"$request\" $http_user_agent",
        )
        .unwrap(),
    );
    for format in [AccessLog::Combined, custom] {
        // The first line sizes the thread's buffer, stdout's and the clock's strings. The
        // clock formats `$time_local` again when a new second starts (two strings), so a
        // line that straddles one is measured again: the fewest of three.
        access::log(&format, &e);
        let made = (0..3)
            .map(|_| {
                let region = Region::new(GLOBAL);
                access::log(&format, &e);
                region.change().allocations
            })
            .min();
        assert_eq!(made, Some(0), "allocations for one line in {format:?}");
    }
}
