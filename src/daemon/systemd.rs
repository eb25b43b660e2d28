//! systemd readiness and watchdog: `READY=1` once serving, `WATCHDOG=1` at half of
//! `WATCHDOG_USEC`, `STOPPING=1` on shutdown. Outside systemd (no `NOTIFY_SOCKET`) every call
//! is a no-op.

use std::os::unix::net::UnixDatagram;

use crate::config::SystemdEnv;

#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    pub fn new(env: &SystemdEnv) -> Self {
        Notifier {
            socket: env.notify_socket.clone(),
        }
    }

    /// Sends one state line; failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(e) = send(path, state) {
            tracing::warn!(socket = %path, state, error = %e, "could not notify systemd");
        }
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        // An abstract socket (Linux).
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_socket_and_is_silent_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(&SystemdEnv {
            notify_socket: Some(path.display().to_string()),
            watchdog: None,
        });
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        Notifier::default().notify("READY=1");
    }
}
