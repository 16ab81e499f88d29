//! A minimal OTLP/HTTP sink that the telemetry-on case exports to.

use anyhow::Context as _;

/// A minimal OTLP/HTTP sink on a loopback port, started once: it reads each request and
/// answers `200` with an empty protobuf body (a valid, empty export response).
pub(super) fn otlp_sink() -> anyhow::Result<std::net::SocketAddr> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    static SINK: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    if let Some(addr) = SINK.get() {
        return Ok(*addr);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the OTLP sink")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                });
                let mut writer = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(*SINK.get_or_init(|| addr))
}
