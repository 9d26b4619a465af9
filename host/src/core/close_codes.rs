//! Close codes the host itself uses (the policy chooses its own, 4000-4999).

/// Shutdown ("going away").
pub const SHUTDOWN: u16 = 1001;
/// A newer session of the same client took over; or an operator's removal.
pub const NORMAL: u16 = 1000;
/// Dropped to make room under the session limit ("try again later").
pub const CAPACITY: u16 = 1013;
/// The client broke the frame-rate limit, or claimed an identity another
/// session proved.
pub const POLICY_VIOLATION: u16 = 1008;
/// The client held too much of the inbound budget in unfinished messages.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The client's token expired (`[auth] close_on_expiry`). In the private
/// range, after HTTP's 401.
pub const TOKEN_EXPIRED: u16 = 4401;
/// The host broke the connection's stream itself (a frame it could only
/// write in part).
pub const INTERNAL_ERROR: u16 = 1011;
