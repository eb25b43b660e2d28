//! The configuration files shipped under deploy/ load and validate with the rotator's own
//! loader, and agree with what the manifests around them assume (the port the probes, the
//! Service and the NetworkPolicy name; a shutdown shorter than the grace the platform gives).

use std::path::Path;
use std::time::Duration;

use amg_token_rotator::config;

#[test]
fn the_kubernetes_configuration_is_valid_and_matches_the_manifests() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base/config.toml");
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
    // deployment.yaml, service.yaml and networkpolicy.yaml use 8947.
    assert_eq!(cfg.daemon.listen.port(), 8947, "daemon.listen");
    assert!(
        cfg.daemon.listen.ip().is_unspecified(),
        "daemon.listen must accept the kubelet's probes and Prometheus, not loopback only"
    );
    // terminationGracePeriodSeconds is 90.
    assert!(cfg.daemon.shutdown_timeout < Duration::from_secs(90));
    assert!(!cfg.targets.is_empty());
}
