//! Tests of the client against a scripted server on loopback: aborts, owed replies, 421.

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use super::data::{parse_epsv, parse_pasv};
use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a scripted conversation on loopback.
struct Fake {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Fake {
    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("a line");
        line
    }

    fn expect(&mut self, line: &str) {
        assert_eq!(String::from_utf8_lossy(&self.line()), format!("{line}\r\n"));
    }

    fn say(&mut self, reply: &str) {
        self.writer
            .write_all(format!("{reply}\r\n").as_bytes())
            .expect("reply");
    }

    /// Answers EPSV and returns the data connection the client makes.
    fn passive(&mut self) -> TcpStream {
        self.expect("EPSV");
        let listener = TcpListener::bind("127.0.0.1:0").expect("data port");
        let port = listener.local_addr().expect("port").port();
        self.say(&format!("229 Entering Extended Passive Mode (|||{port}|)"));
        let (data, _) = listener.accept().expect("data connection");
        data.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        data
    }
}

/// A client connected to a server thread that greets, then follows `script`.
fn against(script: impl FnOnce(Fake) + Send + 'static) -> (FtpClient, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("port").port();
    let server = std::thread::spawn(move || {
        let (control, _) = listener.accept().expect("accept");
        control.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let writer = control.try_clone().expect("clone");
        let mut fake = Fake {
            reader: BufReader::new(control),
            writer,
        };
        fake.say("220 fake");
        script(fake);
    });
    let (client, _) =
        FtpClient::connect("127.0.0.1", port, TIMEOUT, false, &Security::Plain).expect("connect");
    (client, server)
}

fn answers_pwd(mut fake: Fake) {
    fake.expect("PWD");
    fake.say("257 \"/\" is the current directory.");
}

/// After the scripted exchange, the next command gets its own reply.
fn assert_in_step(mut client: FtpClient, server: JoinHandle<()>) {
    assert_eq!(client.pwd().expect("pwd in step"), "/");
    server.join().expect("fake server");
}

/// An upload with Ctrl-C already pressed, against `script`: aborted, and in step.
fn abort_upload(script: impl FnOnce(Fake) + Send + 'static) {
    let (mut client, server) = against(script);
    let abort = AtomicBool::new(true);
    let result = client.store("f", false, &mut &b"data"[..], "f", &mut |_| {}, &abort);
    assert!(matches!(result, Err(ClientError::Aborted)), "{result:?}");
    assert_in_step(client, server);
}

#[test]
fn an_aborted_upload_sends_the_synch_as_urgent_data_then_resets_the_data_connection() {
    abort_upload(|mut fake| {
        let mut data = fake.passive();
        fake.expect("STOR f");
        fake.say("150 Go on.");
        // This socket does not keep urgent data inline, so the urgent byte leaves the
        // stream: it must be the DM of the Synch (RFC 854).
        assert_eq!(fake.line(), b"\xff\xf4\xffABOR\r\n");
        fake.say("426 Transfer aborted.");
        fake.say("226 ABOR successful.");
        // A reset, not the end of the file: no server stores this upload.
        let read = data.read(&mut [0u8; 16]);
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        answers_pwd(fake);
    });
}

#[test]
fn a_225_settles_an_abort_whose_transfer_never_answers() {
    // pyftpdlib, when ABOR comes before the first byte: 225 and nothing for the STOR.
    abort_upload(|mut fake| {
        let _data = fake.passive();
        fake.expect("STOR f");
        fake.say("150 Go on.");
        assert!(fake.line().ends_with(b"ABOR\r\n"));
        fake.say("225 ABOR command successful; data channel closed.");
        answers_pwd(fake);
    });
}

#[test]
fn a_second_preliminary_reply_owes_nothing_more() {
    let (mut client, server) = against(|mut fake| {
        let mut data = fake.passive();
        fake.expect("RETR f");
        fake.say("125 Data connection already open.");
        fake.say("150 Transfer starting.");
        data.write_all(b"abc").expect("data");
        drop(data);
        fake.say("226 Transfer complete.");
        answers_pwd(fake);
    });
    let abort = AtomicBool::new(false);
    let mut got = Vec::new();
    let result = client.retrieve("f", 0, &mut got, "f", &mut |_| {}, &abort);
    assert_eq!(result.expect("download"), 3);
    assert_eq!(got, b"abc");
    assert_in_step(client, server);
}

/// A local file that cannot be written.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::StorageFull))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_reply_a_failed_download_leaves_is_read_before_the_next_command() {
    let (mut client, server) = against(|mut fake| {
        let mut data = fake.passive();
        fake.expect("RETR f");
        fake.say("150 Here it comes.");
        data.write_all(&[7u8; 1000]).expect("data");
        // The client gives up on the data connection; only then the verdict.
        let read = data.read(&mut [0u8; 16]);
        assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
        fake.say("426 Connection closed; transfer aborted.");
        answers_pwd(fake);
    });
    let abort = AtomicBool::new(false);
    let result = client.retrieve("f", 0, &mut Full, "f", &mut |_| {}, &abort);
    assert!(
        matches!(result, Err(ClientError::Local { .. })),
        "{result:?}"
    );
    assert_in_step(client, server);
}

#[test]
fn a_421_ends_the_session() {
    let reply = |code| {
        ClientError::Refused(ServerReply {
            code,
            lines: vec!["bye".into()],
        })
    };
    assert!(reply(421).is_fatal());
    assert!(!reply(550).is_fatal());
    assert!(ClientError::Closed.is_fatal());
    assert!(!ClientError::Aborted.is_fatal());
}

#[test]
fn passive_replies() {
    assert_eq!(
        parse_epsv("Entering Extended Passive Mode (|||6446|)."),
        Some(6446)
    );
    assert_eq!(parse_epsv("Entering (!!!21!)"), Some(21));
    assert_eq!(parse_epsv("Entering (|1|2|3|)"), None);
    assert_eq!(
        parse_pasv("Entering Passive Mode (127,0,0,1,200,10)."),
        Some(200 * 256 + 10)
    );
    assert_eq!(parse_pasv("Entering Passive Mode 10,0,0,1,4,1"), Some(1025));
    assert_eq!(parse_pasv("Entering Passive Mode (1,2,3)"), None);
    assert_eq!(parse_pasv("(1,2,3,4,999,1)"), None);
}
