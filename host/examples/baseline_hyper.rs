//! The baseline of `bench/http.sh`: a minimal hyper 1 server, configured like `plugin-host
//! serve` (tokio multi-thread runtime, HTTP/1.1, TCP_NODELAY), answering every request with the
//! bytes the C greeter's `GET /c/hello` returns.
//!
//! Run: `cargo run --release -p pluglet-host --example baseline_hyper -- 127.0.0.1:18182`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

fn main() -> std::io::Result<()> {
    // The same worker count as `plugin-host serve`.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18182".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request: http::Request<hyper::body::Incoming>| async {
                let mut response =
                    http::Response::new(Full::new(Bytes::from_static(b"hello from C")));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
