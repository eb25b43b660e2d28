//! Coordination of several replicas (issue 16): the lease each replica must hold on a shard of
//! the work before it plans or changes anything there. So far: the lease logic, pure and
//! property-tested (`lease`); which shards a replica holds among the members alive (`shards`,
//! pure too); and the table they run on (`table`: DynamoDB, tested on moto's server in
//! tests/coordination.rs). The daemon's use of them is still to come.

pub mod lease;
pub mod shards;
pub mod table;
