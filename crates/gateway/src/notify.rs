//! systemd readiness notification (sd_notify(3)); every function is a no-op without
//! NOTIFY_SOCKET. (Placeholder: the full module replaces this.)

pub fn ready() {}
pub fn stopping() {}
pub fn main_pid(_pid: u32) {}
