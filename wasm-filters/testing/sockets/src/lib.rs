//! Tries to phone home over TCP. Its component imports `wasi:sockets`, so a correct host
//! refuses to load it at all.

use chorus_filter_sdk::{Filter, Request, Verdict, annotation, export_filter};

struct Sockets;

impl Filter for Sockets {
    fn on_request(_req: Request) -> Verdict {
        match std::net::TcpStream::connect("127.0.0.1:6379") {
            Ok(_) => Verdict::allow_with(vec![annotation("sockets.connected", "yes")]),
            Err(e) => Verdict::deny(500, "socket_failed", e.to_string()),
        }
    }
}

export_filter!(Sockets);
