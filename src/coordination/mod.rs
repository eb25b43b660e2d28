//! Coordination of several replicas (issue 16): the lease each replica must hold on a shard of
//! the work before it plans or changes anything there. So far: the lease logic, pure and
//! property-tested (`lease`), and the table it runs on (`table`: DynamoDB, tested on moto's
//! server in tests/coordination.rs). The shards and the daemon's use of them are still to come.

pub mod lease;
pub mod table;
