//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the tests
//! of the status page: open a page, evaluate script in it, wait for what it shows. One
//! browser per test, in a profile directory of its own, killed with its whole process group
//! when dropped.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket};

/// Bound on starting the browser and on each wait in a page.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);

/// A running headless Chromium.
pub struct Browser {
    child: Child,
    port: u16,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium headless, its DevTools on a port it picks itself.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new("chromium")
            .args([
                "--headless",
                // The tests run as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromium ({e}); scripts/test installs Debian's chromium")
            });
        // Chromium writes the port it bound into the profile once DevTools listens.
        let active = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let port = loop {
            // Whole once its second line (the browser's path) is there.
            if let Some(port) = std::fs::read_to_string(&active)
                .ok()
                .filter(|text| text.lines().count() >= 2)
                .and_then(|text| text.lines().next().and_then(|l| l.parse().ok()))
            {
                break port;
            }
            assert!(
                start.elapsed() < BROWSER_TIMEOUT,
                "chromium did not open DevTools within {BROWSER_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// The page Chromium opened at start, connected.
    pub fn page(&self) -> Page {
        let start = Instant::now();
        let url = loop {
            let targets = devtools_get(self.port, "/json/list");
            let url = targets.as_array().and_then(|all| {
                all.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(url) = url {
                break url;
            }
            assert!(start.elapsed() < BROWSER_TIMEOUT, "no page in {targets}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(BROWSER_TIMEOUT))
            .expect("read timeout");
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("DevTools websocket");
        let mut page = Page {
            socket,
            next_id: 0,
            exceptions: Vec::new(),
        };
        page.call("Runtime.enable", json!({}));
        page.call("Page.enable", json!({}));
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The renderer and helper processes are in the browser's process group.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET of the DevTools HTTP endpoint, as JSON (read to its `Content-Length`: DevTools
/// keeps the connection open whatever the request says).
fn devtools_get(port: u16, path: &str) -> Value {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
    stream
        .set_read_timeout(Some(BROWSER_TIMEOUT))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    for _ in 0..100 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("DevTools header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("Content-Length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("DevTools body");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("DevTools {path}: {e}"))
}

/// A page of the browser, driven over its DevTools websocket.
pub struct Page {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Uncaught script exceptions reported so far (their descriptions).
    pub exceptions: Vec<String>,
}

impl Page {
    /// Calls DevTools method `method`; its result. Events that arrive meanwhile are noted.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(request.to_string()))
            .expect("send to DevTools");
        loop {
            let message = match self.socket.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("DevTools did not answer {method} within {BROWSER_TIMEOUT:?}")
                }
                Err(e) => panic!("DevTools {method}: {e}"),
            };
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if value["method"] == "Runtime.exceptionThrown" {
                let details = &value["params"]["exceptionDetails"];
                self.exceptions.push(
                    details["exception"]["description"]
                        .as_str()
                        .or_else(|| details["text"].as_str())
                        .unwrap_or("?")
                        .to_owned(),
                );
            }
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    panic!("DevTools {method}: {error}");
                }
                return value["result"].clone();
            }
        }
    }

    /// Loads `url` and waits for its `load` event.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for("document.readyState === 'complete'", "the page to load");
    }

    /// The value of script `expression` in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|details| panic!("{expression} threw: {details}"))
    }

    /// [`Page::eval`], or what it threw.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        match result.get("exceptionDetails") {
            Some(details) => Err(details.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Waits until `expression` is truthy in the page (one that throws, e.g. before the page
    /// has its elements, counts as not yet); its value. Bounded by [`BROWSER_TIMEOUT`].
    pub fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let start = Instant::now();
        loop {
            let value = self.try_eval(expression).unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                start.elapsed() < BROWSER_TIMEOUT,
                "waited {BROWSER_TIMEOUT:?} for {what} ({expression}); the page shows:\n{}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
