//! The client's TLS session store: rustls's memory cache, counting the TLS 1.3 tickets it
//! holds per server, so that the FTP client can get new ones before it runs out (see
//! `FtpClient::keep_tickets`). Each ticket is still handed out at most once, as the rustls
//! trait requires and RFC 8446 §C.4 advises.

use std::collections::HashMap;
use std::sync::Mutex;

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;

/// Servers remembered, times the tickets kept for each (rustls's own default size).
const CACHE_SIZE: usize = 256;
/// The memory cache keeps this many TLS 1.3 tickets per server, dropping the oldest.
const TICKETS_PER_SERVER: usize = 8;

/// A [`ClientSessionMemoryCache`] that knows how many TLS 1.3 tickets it holds per server.
#[derive(Debug)]
pub struct TicketStore {
    cache: ClientSessionMemoryCache,
    held: Mutex<HashMap<ServerName<'static>, usize>>,
}

impl Default for TicketStore {
    fn default() -> TicketStore {
        TicketStore {
            cache: ClientSessionMemoryCache::new(CACHE_SIZE),
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl TicketStore {
    /// TLS 1.3 tickets held for `server`: as many as the next handshakes can resume with.
    /// An overestimate only when the cache dropped the server for others (more than 32
    /// servers); the next take finds none and puts the count right.
    pub fn held(&self, server: &ServerName<'_>) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&server.to_owned()).copied().unwrap_or(0)
    }

    fn count(&self, server: ServerName<'static>, change: impl FnOnce(usize) -> usize) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(server).or_default();
        *n = change(*n);
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server: ServerName<'static>, group: NamedGroup) {
        self.cache.set_kx_hint(server, group);
    }

    fn kx_hint(&self, server: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache.kx_hint(server)
    }

    fn set_tls12_session(&self, server: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.cache.set_tls12_session(server, value);
    }

    fn tls12_session(&self, server: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache.tls12_session(server)
    }

    fn remove_tls12_session(&self, server: &ServerName<'static>) {
        self.cache.remove_tls12_session(server);
    }

    fn insert_tls13_ticket(&self, server: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.cache.insert_tls13_ticket(server.clone(), value);
        self.count(server, |n| (n + 1).min(TICKETS_PER_SERVER));
    }

    fn take_tls13_ticket(&self, server: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let ticket = self.cache.take_tls13_ticket(server);
        let taken = ticket.is_some();
        self.count(
            server.clone(),
            |n| if taken { n.saturating_sub(1) } else { 0 },
        );
        ticket
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};

    use crate::client::stream::{ClientTls, server_name};
    use crate::tls::{self, Certificate, Trust};

    /// Hands what `from` has to say to `to`; whether there was anything.
    fn deliver<A, B>(from: &mut ConnectionCommon<A>, to: &mut ConnectionCommon<B>) -> bool {
        let mut wire = Vec::new();
        from.write_tls(&mut wire).expect("write");
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read");
            to.process_new_packets().expect("handshake");
        }
        !wire.is_empty()
    }

    /// Lets both sides talk until they are quiet (bounded).
    fn talk(client: &mut ClientConnection, server: &mut ServerConnection) {
        for _ in 0..16 {
            let sent = deliver(client, server);
            if !deliver(server, client) && !sent {
                return;
            }
        }
        panic!("the handshake did not settle");
    }

    fn connect(tls: &ClientTls, server: &Arc<ServerConfig>) -> bool {
        let mut client = ClientConnection::new(
            Arc::clone(&tls.config),
            server_name("localhost").expect("name"),
        )
        .expect("client");
        let mut server = ServerConnection::new(Arc::clone(server)).expect("server");
        talk(&mut client, &mut server);
        client.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    #[test]
    fn tickets_are_counted_as_they_come_and_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        tls::generate_self_signed(dir.path()).expect("certificate");
        let certificate =
            Certificate::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
                .expect("load");
        let control = tls::server_config(certificate).expect("server config");
        let upload = tls::upload_config(&control);
        let tls = ClientTls::new(&Trust::CaFile(&dir.path().join("cert.pem"))).expect("client");
        let name = server_name("localhost").expect("name");
        assert_eq!(tls.tickets.held(&name), 0);
        assert!(!connect(&tls, &control), "nothing to resume yet");
        assert_eq!(tls.tickets.held(&name), 8, "the server sends 8");
        for left in (0..8).rev() {
            assert!(connect(&tls, &upload), "resumed with a ticket");
            assert_eq!(tls.tickets.held(&name), left, "one spent, none back");
        }
        assert!(!connect(&tls, &upload), "none left to resume with");
        assert!(!connect(&tls, &control));
        assert!(
            connect(&tls, &control),
            "a connection that reads brings new ones"
        );
        assert_eq!(tls.tickets.held(&name), 8, "at most 8 are kept");
    }
}
