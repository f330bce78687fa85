//! hello-http-native: the hello-http sample's main routes as a native HTTP server, for the
//! container path (the same service runs as a Wasm pod from `../../hello-http`).
//!
//! Routes: `GET /` (a greeting), `/echo` (the body back), `GET /api/info` (JSON about the
//! request). Listens on `$LISTEN`, else `$POD_IP:8080`, else `0.0.0.0:8080`; std only, one
//! thread per connection, HTTP/1.0-style (one request per connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| {
        let ip = std::env::var("POD_IP").unwrap_or_else(|_| "0.0.0.0".into());
        format!("{ip}:8080")
    });
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!("hello-http-native listening on {addr}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("connection: {e}");
            }
        });
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (mut length, mut content_type) = (0usize, String::from("application/octet-stream"));
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (code, kind, answer): (u16, String, Vec<u8>) = match (method.as_str(), path) {
        ("GET", "/") => (200, "text/plain".into(), b"hello from flotilla native http\n".to_vec()),
        (_, "/echo") => (200, content_type, body),
        ("GET", "/api/info") => (
            200,
            "application/json".into(),
            format!(
                "{{\"service\":\"hello-http-native\",\"method\":\"{method}\",\"path\":\"{}\",\"query\":\"{}\"}}",
                escape(path),
                escape(query)
            )
            .into_bytes(),
        ),
        _ => (404, "text/plain".into(), b"not found\n".to_vec()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {code} {}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        if code == 200 { "OK" } else { "Not Found" },
        answer.len()
    )?;
    out.write_all(&answer)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
