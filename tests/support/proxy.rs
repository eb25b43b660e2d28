//! The fault-injecting Secrets Manager proxy: an HTTP/1 server in this process, in front of moto,
//! that forwards every call and can fail, stall, lose the answer of, or patch chosen operations,
//! as an outage, a permission problem or a lost connection would; it logs the operations it sees.
//!
//! It listens on 127.0.0.1 only, and forwards to moto's 127.0.0.1 endpoint. Its waits are bounded
//! by others: a stall lasts the delay the test gave it, and a forwarded call waits for moto with
//! no timeout of its own (the caller, the rotator's SDK, times out its side).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A fault to inject in front of Secrets Manager.
#[derive(Debug, Clone)]
pub struct SmFault {
    /// The operation, as in `X-Amz-Target: secretsmanager.<Operation>`; `*` for any.
    pub operation: String,
    /// Calls of it to fail; `u32::MAX` for all.
    pub times: u32,
    pub status: u16,
    pub error_type: String,
}

#[derive(Default)]
struct ProxyState {
    faults: Vec<SmFault>,
    /// Operations held this long, then answered 500 without reaching moto: a call that hangs
    /// and never takes effect.
    stalls: Vec<(String, Duration)>,
    /// A fraction of calls answered with 500 InternalServiceError or 400 ThrottlingException.
    error_rate: f64,
    /// Operations forwarded to moto (so they take effect) whose answer is then replaced by a
    /// 500: a write that landed although the caller was told it failed. Calls left per entry.
    lost_answers: Vec<(String, u32)>,
    /// Members merged into every DescribeSecret answer, as real Secrets Manager would report
    /// them where moto cannot (e.g. `RotationEnabled`, which moto sets only by invoking a
    /// rotation Lambda through Docker).
    describe_patch: Option<serde_json::Map<String, serde_json::Value>>,
    rng: fastrand::Rng,
    injected: usize,
    /// Operations seen, in order.
    calls: Vec<String>,
}

/// A wire-level proxy in front of moto that can fail chosen Secrets Manager operations, as a
/// real outage or a permission problem would.
#[derive(Clone)]
pub struct SmProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

impl SmProxy {
    pub async fn start(upstream: String) -> SmProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        let client = client.clone();
                        let upstream = upstream.clone();
                        async move { forward(req, &st, &client, &upstream).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        SmProxy { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fail(&self, operation: &str, times: u32, status: u16, error_type: &str) {
        self.state.lock().unwrap().faults.push(SmFault {
            operation: operation.into(),
            times,
            status,
            error_type: error_type.into(),
        });
    }

    /// Holds every call of `operation` for `delay`, then answers 500 InternalServiceError
    /// without forwarding it: the call never takes effect.
    pub fn stall(&self, operation: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .stalls
            .push((operation.into(), delay));
    }

    /// Forwards the next `times` calls of `operation` to moto, then answers each with 500
    /// InternalServiceError: the call takes effect, and the caller hears that it failed.
    pub fn lose_answers(&self, operation: &str, times: u32) {
        self.state
            .lock()
            .unwrap()
            .lost_answers
            .push((operation.into(), times));
    }

    /// Merges `members` into every DescribeSecret answer.
    pub fn patch_describe(&self, members: serde_json::Value) {
        self.state.lock().unwrap().describe_patch = members.as_object().cloned();
    }

    pub fn clear_faults(&self) {
        let mut s = self.state.lock().unwrap();
        s.faults.clear();
        s.stalls.clear();
        s.error_rate = 0.0;
        s.lost_answers.clear();
        s.describe_patch = None;
    }

    /// Fails a fraction of all calls, half as 500 InternalServiceError, half as throttling.
    pub fn set_error_rate(&self, rate: f64, seed: u64) {
        let mut s = self.state.lock().unwrap();
        s.error_rate = rate;
        s.rng = fastrand::Rng::with_seed(seed);
    }

    /// Calls answered with an injected error so far.
    pub fn injected(&self) -> usize {
        self.state.lock().unwrap().injected
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }
}

async fn forward(
    req: Request<Incoming>,
    state: &Mutex<ProxyState>,
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let op = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("secretsmanager."))
        .unwrap_or("")
        .to_owned();
    let stall = {
        let s = state.lock().unwrap();
        s.stalls
            .iter()
            .find(|(o, _)| *o == op || o == "*")
            .map(|(_, d)| *d)
    };
    if let Some(delay) = stall {
        state.lock().unwrap().calls.push(op.clone());
        tokio::time::sleep(delay).await;
        let body = r#"{"__type":"InternalServiceError","message":"stalled by the test proxy"}"#;
        return Ok(Response::builder()
            .status(500)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", "InternalServiceError")
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    let injected = {
        let mut s = state.lock().unwrap();
        s.calls.push(op.clone());
        let hit = s
            .faults
            .iter_mut()
            .find(|f| (f.operation == op || f.operation == "*") && f.times > 0);
        let chosen = hit.map(|f| {
            if f.times != u32::MAX {
                f.times -= 1;
            }
            (f.status, f.error_type.clone())
        });
        let random = (s.error_rate > 0.0 && s.rng.f64() < s.error_rate).then(|| {
            if s.rng.bool() {
                (500, "InternalServiceError".to_owned())
            } else {
                (400, "ThrottlingException".to_owned())
            }
        });
        let injected = chosen.or(random);
        if injected.is_some() {
            s.injected += 1;
        }
        injected
    };
    if let Some((status, error_type)) = injected {
        let body = format!(r#"{{"__type":"{error_type}","message":"injected by the test proxy"}}"#);
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", error_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let uri = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in parts.headers.iter() {
        out = out.header(k, v);
    }
    let resp = match client.request(out.body(Full::new(bytes)).unwrap()).await {
        Ok(r) => r,
        Err(_) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from_static(b"upstream unreachable")))
                .unwrap())
        }
    };
    let (mut parts, body) = resp.into_parts();
    let mut bytes = body.collect().await?.to_bytes();
    let (lost, patch) = {
        let mut s = state.lock().unwrap();
        let lost = s
            .lost_answers
            .iter_mut()
            .find(|(o, n)| *o == op && *n > 0)
            .map(|(_, n)| {
                if *n != u32::MAX {
                    *n -= 1;
                }
            })
            .is_some();
        if lost {
            s.injected += 1;
        }
        let patch = (op == "DescribeSecret" && parts.status.is_success())
            .then(|| s.describe_patch.clone())
            .flatten();
        (lost, patch)
    };
    if lost {
        let body = r#"{"__type":"InternalServiceError","message":"the answer was lost by the test proxy"}"#;
        return Ok(Response::builder()
            .status(500)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", "InternalServiceError")
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    if let Some(patch) = patch {
        if let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_slice(&bytes) {
            doc.extend(patch);
            bytes = Bytes::from(serde_json::to_vec(&doc).expect("JSON"));
            parts.headers.remove("content-length");
        }
    }
    Ok(Response::from_parts(parts, Full::new(bytes)))
}
