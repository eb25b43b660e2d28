//! Crash points for the reliability tests: compiled in only with the `failpoints` feature.
//!
//! With the feature on and `AMG_ROTATOR_FAILPOINT=<name>[:<n>]` set, the process aborts (as a
//! `kill -9` would: no unwinding, no cleanup) the n-th time (default the first) execution
//! reaches the named point. Without the feature, `hit` compiles to nothing.

/// Every crash point, in protocol order; the reliability tests iterate over this list.
pub const POINTS: &[&str] = &[
    "after_create_token",
    "after_verify",
    "after_first_record",
    "after_pending",
    "after_promote",
    "after_delete_token",
    "after_recreate_delete",
    "after_recreate_create",
    "after_recreate_publish",
    "after_create_key",
    "after_key_pending",
    "after_key_promote",
    "after_delete_key",
];

#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    static HITS: AtomicU32 = AtomicU32::new(0);
    let armed = ARMED.get_or_init(crate::config::failpoint_env);
    if let Some((point, nth)) = armed {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}
