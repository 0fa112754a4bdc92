//! The receiver's HTTP client: `hookwarden-receiver send` (sign a body as a sender would and
//! POST it, so users can test a receiver end to end), the `forward` sink, and the
//! end-to-end tests.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};

/// The answer to a delivery.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// An HTTP/1 client for `http://` and `https://` URLs, trusting the system's CA roots.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds an [`HttpClient`]; fails only when the system's CA roots cannot be read.
pub fn http_client() -> std::result::Result<HttpClient, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("cannot load CA roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// POSTs `body` with `headers` to `url`; waits 30 s at most.
pub async fn post(url: &str, headers: &[(String, String)], body: Vec<u8>) -> Result<Answer> {
    let mut req = Request::post(parse(url)?);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Send(format!("invalid header: {e}")))?;
    send(req, Duration::from_secs(30)).await
}

/// GETs `url`; waits `within` at most.
pub async fn get(url: &str, within: Duration) -> Result<Answer> {
    let req = Request::get(parse(url)?)
        .body(Full::new(Bytes::new()))
        .map_err(|e| Error::Send(format!("invalid request: {e}")))?;
    send(req, within).await
}

fn parse(url: &str) -> Result<hyper::Uri> {
    url.parse()
        .map_err(|e| Error::Send(format!("invalid URL {url:?}: {e}")))
}

/// One client per thread for every [`post`] and [`get`]: its connections are kept and
/// reused, and the CA roots are read once. Per thread, not per process: a pooled
/// connection is driven by the runtime that opened it, and a thread outlives no runtime
/// of its own (each of the tests' runtimes has its threads).
fn shared_client() -> Result<HttpClient> {
    thread_local! {
        static CLIENT: std::result::Result<HttpClient, String> = http_client();
    }
    CLIENT.with(|client| client.clone().map_err(Error::Send))
}

async fn send(req: Request<Full<Bytes>>, within: Duration) -> Result<Answer> {
    let client = shared_client()?;
    let answer = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| Error::Send(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Send(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    };
    tokio::time::timeout(within, answer)
        .await
        .map_err(|_| Error::Send(format!("no answer within {} s", within.as_secs())))?
}
