//! Vigil's policy plugins, built from `plugins/` for `wasm32-wasip2` by this
//! crate's build script and embedded here, so `vigil` runs with no plugin file
//! at all and tests load exactly the plugins the source tree describes.

/// The default policy component (`plugins/default-policy`).
pub static DEFAULT_POLICY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_default_policy.wasm"));

/// Where the build left the default policy component on disk, for commands
/// that take a plugin path.
pub const DEFAULT_POLICY_PATH: &str = concat!(env!("OUT_DIR"), "/vigil_default_policy.wasm");

/// Plugins built only for tests and benchmarks, and the example policies.
#[cfg(feature = "test-plugins")]
pub mod test_plugins {
    /// Example: evicts at the first sign of trouble.
    pub static STRICT: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_strict_policy.wasm"));
    /// On disk, for commands that take a plugin path.
    pub const STRICT_PATH: &str = concat!(env!("OUT_DIR"), "/vigil_strict_policy.wasm");
    /// Example: never evicts sessions that answer pings for silence.
    pub static LENIENT: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_lenient_policy.wasm"));
    /// On disk, for commands that take a plugin path.
    pub const LENIENT_PATH: &str = concat!(env!("OUT_DIR"), "/vigil_lenient_policy.wasm");
    /// Example: per-class quotas, victims by health then age.
    pub static CAPACITY: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_capacity_policy.wasm"));
    /// On disk, for commands that take a plugin path.
    pub const CAPACITY_PATH: &str = concat!(env!("OUT_DIR"), "/vigil_capacity_policy.wasm");

    /// Keeps every session at full health in `regular`; does no work.
    pub static NOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vigil_test_noop.wasm"));
    /// On disk, for commands that take a plugin path.
    pub const NOOP_PATH: &str = concat!(env!("OUT_DIR"), "/vigil_test_noop.wasm");

    /// Misbehaves as its JSON config says (`{"fault": "loop", "in": "assess"}`).
    pub static MISBEHAVING: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_test_misbehaving.wasm"));
    /// On disk, for commands that take a plugin path.
    pub const MISBEHAVING_PATH: &str = concat!(env!("OUT_DIR"), "/vigil_test_misbehaving.wasm");

    /// Reports the clocks and random sources WASI gives it in its verdicts.
    pub static CLOCK_READER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_test_clock_reader.wasm"));

    /// Shows the data-frame events it heard of as each session's health.
    pub static FRAME_COUNTER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_test_frame_counter.wasm"));

    /// A valid component of another world.
    pub static WRONG_WORLD: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_test_wrong_world.wasm"));
    /// On disk, for commands that take a plugin path.
    pub const WRONG_WORLD_PATH: &str = concat!(env!("OUT_DIR"), "/vigil_test_wrong_world.wasm");

    /// A policy built for `vigil:policy@0.1.0`, an older contract.
    pub static OLD_CONTRACT: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_test_old_contract.wasm"));
    /// A policy built for `vigil:policy@0.2.0`, the contract before tiers
    /// and actions became integer codes.
    pub static CONTRACT_0_2: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_test_contract_0_2.wasm"));
}
