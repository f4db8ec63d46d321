//! The demo upstream of the walkthrough: a product catalog on HTTP/1.1.
//!
//! `GET /api/products`, `GET /api/products/:id` (404 JSON when unknown),
//! `GET /health`; anything else is a 404 JSON. Keep-alive, no request body
//! handling beyond skipping a `Content-Length` body.
//!
//! `catalog-backend [--listen 127.0.0.1:3000]`

use flex_gateway::ops::time;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Serialize, Clone, Copy)]
struct Product {
    id: u32,
    name: &'static str,
    category: &'static str,
    status: &'static str,
}

const PRODUCTS: [Product; 3] = [
    Product {
        id: 1,
        name: "API Gateway",
        category: "infrastructure",
        status: "active",
    },
    Product {
        id: 2,
        name: "Service Mesh",
        category: "networking",
        status: "active",
    },
    Product {
        id: 3,
        name: "Event Bus",
        category: "messaging",
        status: "beta",
    },
];

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn route(method: &str, path: &str) -> (u16, String) {
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return (405, to_json(&json!({"error": "Method not allowed"})));
    }
    match path {
        "/api/products" => (200, to_json(&PRODUCTS)),
        "/health" => (
            200,
            to_json(&json!({"status": "UP", "timestamp": time::now()})),
        ),
        _ => match path.strip_prefix("/api/products/") {
            Some(id) => match PRODUCTS.iter().find(|p| p.id.to_string() == id) {
                Some(p) => (200, to_json(p)),
                None => (404, to_json(&json!({"error": "Product not found"}))),
            },
            None => (404, to_json(&json!({"error": "Not found"}))),
        },
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // read one request head (and skip its body)
        let (method, path, body_len, close, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let header = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                    };
                    let len = header("content-length")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let close = header("connection").is_some_and(|v| v.contains("close"))
                        || req.version == Some(0);
                    break (
                        req.method.unwrap_or("GET").to_string(),
                        req.path.unwrap_or("/").to_string(),
                        len,
                        close,
                        n,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > 64 * 1024 {
                        return Ok(());
                    }
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(_) => return Ok(()),
            }
        };
        let mut skip = (head_len + body_len).saturating_sub(buf.len());
        buf.drain(..(head_len + body_len).min(buf.len()));
        while skip > 0 {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk[..skip.min(4096)]).await?;
            if n == 0 {
                return Ok(());
            }
            skip -= n;
        }
        let (status, body) = route(&method, &path);
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        let mut out = head.into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        stream.write_all(&out).await?;
        if close {
            return Ok(());
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:3000".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" | "-l" => listen = args.next().unwrap_or(listen),
            "--help" | "-h" => {
                println!(
                    "catalog-backend [--listen 127.0.0.1:3000]: the walkthrough's product catalog"
                );
                return Ok(());
            }
            other => {
                eprintln!("catalog-backend: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let listener = TcpListener::bind(&listen).await.map_err(|e| {
        eprintln!("catalog-backend: cannot listen on {listen}: {e}");
        e
    })?;
    eprintln!("catalog-backend listening on http://{listen}");
    let accept = async {
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = serve(stream).await;
            });
        }
    };
    // Ctrl-C stops it even when started in the background of a script,
    // where SIGINT would otherwise be ignored
    tokio::select! {
        r = accept => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
