//! What `vigil-load` can do to a server; each mode prints one JSON report.

pub mod churn;
pub mod fanout;
pub mod idle;
pub mod kills;
