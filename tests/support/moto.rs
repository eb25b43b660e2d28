//! moto's server (`moto_server`, a real Python process) standing in for Secrets Manager, on a
//! free port, killed on drop; and where its executable comes from: `AMG_TEST_MOTO_SERVER`, or the
//! project's `.venv`, created with `moto[server]` on first use.
//!
//! It listens on 127.0.0.1 only; every wait is bounded (30 s for a start to answer, three starts;
//! 600 s for another test process that is creating the venv).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::free_port;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `moto_server` from the project's venv (`.venv`), created on first use with `moto[server]`.
/// `AMG_TEST_MOTO_SERVER` names another executable.
pub fn moto_server_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("AMG_TEST_MOTO_SERVER") {
            return PathBuf::from(p);
        }
        let venv = workspace_root().join(".venv");
        let bin = venv.join("bin/moto_server");
        if bin.exists() {
            return bin;
        }
        // Serialize creation across test processes with a lock directory.
        let lock = workspace_root().join(".venv.lock");
        let deadline = Instant::now() + Duration::from_secs(600);
        while std::fs::create_dir(&lock).is_err() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}",
                lock.display()
            );
            std::thread::sleep(Duration::from_millis(500));
            if bin.exists() {
                return bin;
            }
        }
        let run = |cmd: &mut std::process::Command| {
            let status = cmd.status().expect("python3 runs");
            assert!(status.success(), "{cmd:?} failed");
        };
        run(std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv));
        run(std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg("moto[server]>=5,<6"));
        let _ = std::fs::remove_dir(&lock);
        bin
    })
    .clone()
}

/// moto's server, killed on drop.
pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

impl Moto {
    pub async fn start() -> Moto {
        let bin = moto_server_path();
        let http = reqwest::Client::new();
        for _ in 0..3 {
            let port = free_port();
            let child = std::process::Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let mut moto = Moto { port, child };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(r) = http
                    .get(format!("http://127.0.0.1:{port}/moto-api/"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    if r.status().is_success() {
                        return moto;
                    }
                }
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
