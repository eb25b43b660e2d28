//! A container health probe for the runtime image, which has no shell, curl or wget: it sends
//! `GET /healthz` to the daemon on loopback and exits 0 on HTTP 200, 1 on anything else
//! (refused, timed out, another status). The Dockerfile compiles it with plain `rustc`; it
//! uses only the standard library and never reads the configuration or the environment.
//!
//! Usage: healthcheck [HOST:PORT [PATH]]   (default 127.0.0.1:8947 /healthz)

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8947".to_owned());
    let path = args.next().unwrap_or_else(|| "/healthz".to_owned());
    match status(&addr, &path) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("healthcheck: GET http://{addr}{path} answered {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: GET http://{addr}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The status code of one HTTP/1.1 GET.
fn status(addr: &str, path: &str) -> std::io::Result<u16> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid("the address resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: healthcheck\r\nConnection: close\r\n\r\n"
    )?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => code
            .parse()
            .map_err(|_| invalid("the status code is not a number")),
        _ => Err(invalid("the answer is not HTTP")),
    }
}
