//! One managed credential's road: observe what AWS reports, plan purely, perform.
//!
//! `plan` decides for service-account tokens and holds what every kind shares (reasons,
//! blockers, due times, the secret's mark); `api_key` is the legacy kind; `execute` performs a
//! plan and holds the steps both kinds share (publish, verify, promote); `records` are what the
//! rotator writes on the secret itself (tags).

pub mod api_key;
pub mod execute;
pub mod plan;
pub mod records;
