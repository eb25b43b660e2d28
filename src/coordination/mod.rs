//! Coordination of several replicas (issue 16): the lease each replica must hold on a shard of
//! the work before it plans or changes anything there. Only the lease logic exists so far, pure
//! and property-tested (`lease`); the DynamoDB table it runs on, the shards and the daemon's use
//! of them are still to come.

pub mod lease;
